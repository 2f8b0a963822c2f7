import { createRoute, z } from "@hono/zod-openapi";
import { listActivity } from "../../activity.ts";
import { requireAdmin } from "../../auth/tokens.ts";
import type { Deps } from "../../context.ts";
import type { Api } from "../app.ts";
import { ProjectName, errorResponses, json } from "../schemas.ts";

const Entry = z
  .object({ id: z.string(), type: z.string(), at: z.string(), actor: z.string(), project: z.string().optional(), config: z.string().optional(), detail: z.record(z.string(), z.unknown()), cursor: z.string() })
  .openapi("ActivityEntry");

export function registerActivityRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/activity",
      summary: "Activity, newest first, paged with `before` (the last entry's cursor)",
      request: { query: z.object({ project: ProjectName.optional(), limit: z.coerce.number().int().min(1).max(500).default(50), before: z.string().optional() }) },
      responses: { 200: json(z.object({ activity: z.array(Entry), next: z.string().optional() })), ...errorResponses },
    }),
    async (c) => {
      requireAdmin(c.get("principal"));
      const q = c.req.valid("query");
      const activity = await listActivity(deps, q);
      return c.json({ activity, next: activity.length === q.limit ? activity[activity.length - 1]?.cursor : undefined }, 200);
    },
  );
}
