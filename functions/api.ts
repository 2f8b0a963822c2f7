import { handle } from "hono/aws-lambda";
import { SFNClient } from "@aws-sdk/client-sfn";
import { createApi } from "../core/api/app.ts";
import { rotationRoutes } from "../core/api/routes/rotated.ts";
import { dynamicRoutes } from "../core/api/routes/dynamic.ts";
import { registerWebhookRoutes } from "../core/api/routes/webhooks.ts";
import { SfnExecutionReader } from "../core/adapters/aws/sfn-starter.ts";
import { storedSigner } from "../core/agents/stored-signer.ts";
import { cloudDeps, stateMachines } from "./lib/cloud.ts";

/** The HTTP API behind API Gateway (HTTP API, payload v2): the same hono app as embedded mode. */
const app = cloudDeps().then(async (deps) => {
  const signer = await storedSigner(deps);
  return handle(
    createApi(deps, [
      rotationRoutes(deps, new SfnExecutionReader(new SFNClient({}), stateMachines(), deps.table)),
      dynamicRoutes(deps),
      registerWebhookRoutes,
      (api) => void api.get("/.well-known/jwks.json", (c) => c.json(signer.jwks())),
    ]),
  );
});

export const handler = async (event: Parameters<Awaited<typeof app>>[0], context: Parameters<Awaited<typeof app>>[1]) => (await app)(event, context);
