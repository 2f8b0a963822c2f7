import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, requireAdmin } from "../../auth/tokens.ts";
import { createConfig, createProject, listConfigs, listProjects } from "../../projects.ts";
import type { Api } from "../app.ts";
import type { Deps } from "../../context.ts";
import { ConfigName, ProjectName, conflictResponse, errorResponses, json, jsonBody } from "../schemas.ts";

const Project = z.object({ name: z.string(), createdAt: z.string(), notifyEmail: z.string().optional() }).openapi("Project");
const Config = z.object({ project: z.string(), name: z.string(), createdAt: z.string() }).openapi("Config");

export function registerProjectRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "post",
      path: "/v3/projects",
      summary: "Create a project",
      request: { body: jsonBody(z.object({ name: ProjectName, notifyEmail: z.email().optional() })) },
      responses: { 200: json(z.object({ project: Project })), ...errorResponses, 409: conflictResponse("A project of that name exists") },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      return c.json({ project: await createProject(deps, actorOf(p), c.req.valid("json")) }, 200);
    },
  );
  app.openapi(
    createRoute({ method: "get", path: "/v3/projects", summary: "List projects", responses: { 200: json(z.object({ projects: z.array(Project) })), ...errorResponses } }),
    async (c) => {
      requireAdmin(c.get("principal"));
      return c.json({ projects: await listProjects(deps) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "post",
      path: "/v3/configs",
      summary: "Create a config in a project",
      request: { body: jsonBody(z.object({ project: ProjectName, name: ConfigName })) },
      responses: { 200: json(z.object({ config: Config })), ...errorResponses, 409: conflictResponse("A config of that name exists in the project") },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      return c.json({ config: await createConfig(deps, actorOf(p), c.req.valid("json")) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/configs",
      summary: "List a project's configs",
      request: { query: z.object({ project: ProjectName }) },
      responses: { 200: json(z.object({ configs: z.array(Config) })), ...errorResponses },
    }),
    async (c) => {
      requireAdmin(c.get("principal"));
      return c.json({ configs: await listConfigs(deps, c.req.valid("query").project) }, 200);
    },
  );
}
