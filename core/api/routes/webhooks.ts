import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, requireAdmin } from "../../auth/tokens.ts";
import type { Deps } from "../../context.ts";
import { getProject } from "../../projects.ts";
import { createWebhook, getWebhook, listDeliveries, listWebhooks, removeWebhook, WEBHOOK_ID } from "../../webhooks/model.ts";
import type { Api } from "../app.ts";
import { ConfigName, ProjectName, conflictResponse, errorResponses, json, jsonBody } from "../schemas.ts";

const WebhookInfo = z
  .object({
    id: z.string(),
    project: z.string(),
    url: z.string(),
    events: z.array(z.string()).openapi({ description: "Event types or group.* patterns; empty: every event of the project" }),
    config: z.string().optional(),
    createdAt: z.string(),
    createdBy: z.string(),
  })
  .openapi("Webhook");

const Attempt = z
  .object({
    webhookId: z.string(),
    deliveryId: z.string(),
    eventId: z.string(),
    eventType: z.string(),
    attempt: z.number().int(),
    status: z.enum(["delivered", "failed", "gave_up"]),
    httpStatus: z.number().int().optional(),
    durationMs: z.number(),
    error: z.string().optional(),
    at: z.string(),
    nextAttemptAt: z.string().optional(),
  })
  .openapi("WebhookDeliveryAttempt");

const IdParam = z.object({ id: z.string().regex(WEBHOOK_ID, "not a webhook id") });

/** Webhooks are admin-only: a webhook sees every event of its project, across configs. */
export function registerWebhookRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "post",
      path: "/v3/webhooks",
      summary: "Add a webhook to a project; the signing secret is in this response only",
      request: {
        body: jsonBody(
          z.object({
            project: ProjectName,
            url: z.string().min(1).max(2048),
            events: z.array(z.string().max(100)).max(50).optional(),
            config: ConfigName.optional(),
          }),
        ),
      },
      responses: { 200: json(z.object({ webhook: WebhookInfo, secret: z.string() })), ...errorResponses, 409: conflictResponse("The project has too many webhooks") },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      return c.json(await createWebhook(deps, actorOf(p), c.req.valid("json")), 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/webhooks",
      summary: "List webhooks (never their secrets), optionally of one project",
      request: { query: z.object({ project: ProjectName.optional() }) },
      responses: { 200: json(z.object({ webhooks: z.array(WebhookInfo) })), ...errorResponses },
    }),
    async (c) => {
      requireAdmin(c.get("principal"));
      const { project } = c.req.valid("query");
      if (project) await getProject(deps, project);
      return c.json({ webhooks: await listWebhooks(deps, project) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "delete",
      path: "/v3/webhooks/{id}",
      summary: "Remove a webhook and its delivery log",
      request: { params: IdParam },
      responses: { 200: json(z.object({ deleted: z.literal(true) })), ...errorResponses },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      await removeWebhook(deps, actorOf(p), c.req.valid("param").id);
      return c.json({ deleted: true as const }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/webhooks/{id}/deliveries",
      summary: "The webhook's delivery log: one entry per attempt, newest first",
      request: { params: IdParam, query: z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) }) },
      responses: { 200: json(z.object({ webhook: WebhookInfo, deliveries: z.array(Attempt) })), ...errorResponses },
    }),
    async (c) => {
      requireAdmin(c.get("principal"));
      const { id } = c.req.valid("param");
      const webhook = await getWebhook(deps, id);
      return c.json({ webhook, deliveries: await listDeliveries(deps, id, c.req.valid("query").limit) }, 200);
    },
  );
}
