import { OpenAPIHono } from "@hono/zod-openapi";
import { HTTPException } from "hono/http-exception";
import { bodyLimit } from "hono/body-limit";
import type { Deps } from "../context.ts";
import { isRotorError } from "../errors.ts";
import { authenticate, type Principal } from "../auth/tokens.ts";
import { registerProjectRoutes } from "./routes/projects.ts";
import { registerSecretRoutes } from "./routes/secrets.ts";
import { registerTokenRoutes } from "./routes/tokens.ts";
import { registerActivityRoutes } from "./routes/activity.ts";

export type ApiEnv = { Variables: { principal: Principal } };
export type Api = OpenAPIHono<ApiEnv>;
/** Routes added by later capabilities (rotation, dynamic secrets) plug in here. */
export type RouteModule = (app: Api, deps: Deps) => void;

export const errorBody = (error: string, message: string) => ({ error, message });

/**
 * The one HTTP API: served by local/server.ts in embedded mode and by functions/api.ts
 * behind API Gateway. Bad input always answers a 4xx `{error, message}`; anything
 * unexpected answers a bare 500 without details (they go to the log, minus values).
 */
export function createApi(deps: Deps, extraRoutes: RouteModule[] = []): Api {
  const app = new OpenAPIHono<ApiEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const where = issue?.path?.length ? `${issue.path.join(".")}: ` : "";
        return c.json(errorBody("invalid_request", `${where}${issue?.message ?? "invalid request"}`), 400);
      }
    },
  });

  app.onError((err, c) => {
    if (isRotorError(err)) return c.json(errorBody(err.code, err.message), err.status);
    if (err instanceof HTTPException) {
      const message = err.status === 400 && /JSON/i.test(err.message) ? "request body is not valid JSON" : err.message || "bad request";
      return c.json(errorBody(err.status === 413 ? "too_large" : "invalid_request", message), err.status);
    }
    console.error(`internal error on ${c.req.method} ${c.req.path}: ${(err as Error)?.name}`);
    return c.json(errorBody("internal", "internal error"), 500);
  });
  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));

  app.get("/health", (c) => c.json({ ok: true }));
  app.use(
    "/v3/*",
    bodyLimit({ maxSize: 8 * 1024 * 1024, onError: (c) => c.json(errorBody("too_large", "request body exceeds 8 MiB"), 413) }),
  );
  app.use("/v3/*", async (c, next) => {
    if (c.req.path === "/v3/openapi.json") return next();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    c.set("principal", await authenticate(deps, match?.[1]));
    return next();
  });

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });
  for (const register of [registerProjectRoutes, registerSecretRoutes, registerTokenRoutes, registerActivityRoutes, ...extraRoutes]) {
    register(app, deps);
  }
  app.doc31("/v3/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Rotor API", version: "1", description: "Secrets, rotated secrets and dynamic secrets." },
    security: [{ bearer: [] }],
  });
  return app;
}
