import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, authorizeConfig } from "../../auth/tokens.ts";
import type { ExecutionReader } from "../../executions.ts";
import { forbidden, invalid } from "../../errors.ts";
import { CreateRotatedSchema, createRotated, deleteRotated, getRotated, listRotated, resumeRotated, rotateNow } from "../../rotation/manage.ts";
import type { RotationDeps } from "../../rotation/model.ts";
import type { Api, RouteModule } from "../app.ts";
import { ConfigQuery, ConfigName, ProjectName, SecretName, errorResponses, json, jsonBody } from "../schemas.ts";

const RotatedView = z
  .object({
    project: z.string(),
    config: z.string(),
    name: z.string(),
    provider: z.string(),
    strategy: z.enum(["updater", "issuer"]),
    state: z.enum(["healthy", "rotating", "retrying", "failed", "paused"]),
    activeUsername: z.string(),
    inactiveUsername: z.string(),
    schedule: z.string(),
    connection: z.object({ host: z.string(), port: z.number(), database: z.string() }),
    agent: z.string(),
    lastFlipAt: z.string().nullable(),
    nextFlipAt: z.string().nullable(),
    failureCount: z.number(),
    flipCount: z.number(),
    lastError: z.object({ code: z.string(), message: z.string(), at: z.string() }).nullable(),
    pausedReason: z.string().nullable(),
    flipInProgress: z.object({ token: z.string(), startedAt: z.string() }).nullable(),
    createdAt: z.string(),
  })
  .openapi("RotatedSecret");

const Execution = z
  .object({
    id: z.string(),
    name: z.string(),
    machine: z.string(),
    status: z.string(),
    startedAt: z.string(),
    stoppedAt: z.string().optional(),
    ref: z.record(z.string(), z.string()).optional(),
    error: z.string().optional(),
    cause: z.string().optional(),
  })
  .openapi("Execution");
type ExecutionView = z.infer<typeof Execution>;
const HistoryEvent = z
  .object({ id: z.number(), type: z.string(), timestamp: z.string(), stateName: z.string().optional(), error: z.string().optional(), cause: z.string().optional(), attempt: z.number().optional(), output: z.unknown().optional() })
  .openapi("HistoryEvent");

const RefBody = z.object({ project: ProjectName, config: ConfigName, name: SecretName });

export function rotationRoutes(deps: RotationDeps, executions: ExecutionReader): RouteModule {
  return (app: Api) => {
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/configs/config/rotated_secrets",
        summary: "Create a rotated secret (both users and the managing user are tested first)",
        request: { body: jsonBody(CreateRotatedSchema) },
        responses: { 200: json(z.object({ rotatedSecret: RotatedView })), ...errorResponses },
      }),
      async (c) => {
        const body = c.req.valid("json");
        const p = c.get("principal");
        authorizeConfig(p, body.project, body.config, "write");
        return c.json({ rotatedSecret: await createRotated(deps, actorOf(p), body) }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "get",
        path: "/v3/configs/config/rotated_secrets",
        summary: "List a config's rotated secrets, or one by name (never values)",
        request: { query: ConfigQuery.extend({ name: SecretName.optional() }) },
        responses: { 200: json(z.object({ rotatedSecrets: z.array(RotatedView) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        authorizeConfig(c.get("principal"), q.project, q.config, "read");
        const rotatedSecrets = q.name ? [await getRotated(deps, { project: q.project, config: q.config, name: q.name })] : await listRotated(deps, q.project, q.config);
        return c.json({ rotatedSecrets }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "delete",
        path: "/v3/configs/config/rotated_secret",
        summary: "Stop rotating a secret (the database users are left alone)",
        request: { query: ConfigQuery.extend({ name: SecretName }) },
        responses: { 200: json(z.object({ deleted: z.literal(true) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        const p = c.get("principal");
        authorizeConfig(p, q.project, q.config, "write");
        await deleteRotated(deps, actorOf(p), q);
        return c.json({ deleted: true as const }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/configs/config/rotated_secrets/rotate",
        summary: "Rotate now: starts a flip and answers with its execution id at once",
        request: { body: jsonBody(RefBody) },
        responses: { 202: json(z.object({ executionId: z.string() }), "Flip started"), 409: errorResponses[404], ...errorResponses },
      }),
      async (c) => {
        const body = c.req.valid("json");
        authorizeConfig(c.get("principal"), body.project, body.config, "write");
        return c.json(await rotateNow(deps, body), 202);
      },
    );
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/configs/config/rotated_secrets/resume",
        summary: "Resume a paused rotation, optionally with the passwords the users have now",
        request: { body: jsonBody(RefBody.extend({ passwords: z.tuple([z.string().min(1).max(1024).nullable(), z.string().min(1).max(1024).nullable()]).optional() })) },
        responses: { 200: json(z.object({ rotatedSecret: RotatedView })), ...errorResponses },
      }),
      async (c) => {
        const { passwords, ...ref } = c.req.valid("json");
        const p = c.get("principal");
        authorizeConfig(p, ref.project, ref.config, "write");
        const given: [string | undefined, string | undefined] = [passwords?.[0] ?? undefined, passwords?.[1] ?? undefined];
        return c.json({ rotatedSecret: await resumeRotated(deps, actorOf(p), ref, given) }, 200);
      },
    );

    const canSee = (p: Parameters<typeof authorizeConfig>[0], ref: unknown) => {
      if (p.kind === "admin") return;
      const r = ref as { project?: string; config?: string } | undefined;
      if (!r?.project || !r.config) throw forbidden("this execution is visible to admin tokens only");
      authorizeConfig(p, r.project, r.config, "read");
    };
    app.openapi(
      createRoute({
        method: "get",
        path: "/v3/executions",
        summary: "Workflow executions, newest first (optionally of one rotated secret)",
        request: { query: z.object({ project: ProjectName.optional(), config: ConfigName.optional(), secret: SecretName.optional(), limit: z.coerce.number().int().min(1).max(200).default(20) }) },
        responses: { 200: json(z.object({ executions: z.array(Execution) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        const p = c.get("principal");
        const secret = q.secret && q.project && q.config ? { project: q.project, config: q.config, name: q.secret } : undefined;
        if (q.secret && !secret) throw invalid("secret needs project and config");
        canSee(p, secret);
        return c.json({ executions: (await executions.list({ secret, limit: q.limit })) as ExecutionView[] }, 200);
      },
    );
    const IdParam = z.object({ id: z.string().min(1).max(300) });
    app.openapi(
      createRoute({ method: "get", path: "/v3/executions/{id}", summary: "One execution", request: { params: IdParam }, responses: { 200: json(z.object({ execution: Execution })), ...errorResponses } }),
      async (c) => {
        const execution = await executions.get(c.req.valid("param").id);
        canSee(c.get("principal"), execution.ref);
        return c.json({ execution: execution as ExecutionView }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "get",
        path: "/v3/executions/{id}/history",
        summary: "An execution's event history (state names, ids and error codes; never values)",
        request: { params: IdParam },
        responses: { 200: json(z.object({ events: z.array(HistoryEvent) })), ...errorResponses },
      }),
      async (c) => {
        const id = c.req.valid("param").id;
        canSee(c.get("principal"), (await executions.get(id)).ref);
        return c.json({ events: await executions.history(id) }, 200);
      },
    );
  };
}
