import { createRoute, z } from "@hono/zod-openapi";
import { pageActivity } from "../../activity.ts";
import { requireAdmin } from "../../auth/tokens.ts";
import type { Deps } from "../../context.ts";
import { invalid } from "../../errors.ts";
import { getProject } from "../../projects.ts";
import type { Api } from "../app.ts";
import { ProjectName, errorResponses, json } from "../schemas.ts";

const Entry = z
  .object({ id: z.string(), type: z.string(), at: z.string(), actor: z.string(), project: z.string().optional(), config: z.string().optional(), detail: z.record(z.string(), z.unknown()), cursor: z.string() })
  .openapi("ActivityEntry");

// An entry's cursor is its sort key: `<ISO time>#<event id>`.
const Cursor = z.string().max(200).regex(/^\d{4}-\d\d-\d\dT[^#]*#.+$/, "not an activity cursor (use `next` or an entry's `cursor`)");

export function registerActivityRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/activity",
      summary: "Activity, newest first, paged: pass `next` (or the last entry's cursor) as `cursor` (alias `before`). Admin tokens only: the log spans every project and names every actor.",
      request: {
        query: z.object({
          project: ProjectName.optional(),
          limit: z.coerce.number().int().min(1).max(500).default(50),
          cursor: Cursor.optional(),
          before: Cursor.optional(),
        }),
      },
      responses: { 200: json(z.object({ activity: z.array(Entry), next: z.string().optional() })), ...errorResponses },
    }),
    async (c) => {
      requireAdmin(c.get("principal"));
      const q = c.req.valid("query");
      if (q.cursor && q.before && q.cursor !== q.before) throw invalid("pass either cursor or before, not both");
      if (q.project) await getProject(deps, q.project);
      return c.json(await pageActivity(deps, { project: q.project, limit: q.limit, before: q.cursor ?? q.before }), 200);
    },
  );
}
