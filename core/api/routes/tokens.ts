import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, createToken, listTokens, requireAdmin, revokeToken } from "../../auth/tokens.ts";
import type { Deps } from "../../context.ts";
import { conflict } from "../../errors.ts";
import type { Api } from "../app.ts";
import { ConfigName, ProjectName, conflictResponse, errorResponses, json, jsonBody } from "../schemas.ts";

const TokenInfo = z
  .object({
    id: z.string(),
    kind: z.enum(["admin", "service"]),
    project: z.string().optional(),
    config: z.string().optional(),
    access: z.enum(["read", "read/write"]),
    name: z.string().optional(),
    createdAt: z.string(),
    revokedAt: z.string().optional(),
  })
  .openapi("Token");

export function registerTokenRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "post",
      path: "/v3/tokens",
      summary: "Create a service token scoped to one config (the value is shown once)",
      request: {
        body: jsonBody(z.object({ project: ProjectName, config: ConfigName, access: z.enum(["read", "read/write"]).default("read"), name: z.string().max(100).optional() })),
      },
      responses: { 200: json(z.object({ id: z.string(), token: z.string() })), ...errorResponses },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      return c.json(await createToken(deps, actorOf(p), { kind: "service", ...c.req.valid("json") }), 200);
    },
  );
  app.openapi(
    createRoute({ method: "get", path: "/v3/tokens", summary: "List tokens (never their values)", responses: { 200: json(z.object({ tokens: z.array(TokenInfo) })), ...errorResponses } }),
    async (c) => {
      requireAdmin(c.get("principal"));
      return c.json({ tokens: await listTokens(deps) }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "delete",
      path: "/v3/tokens/{id}",
      summary: "Revoke a token",
      request: { params: z.object({ id: z.string().regex(/^tok_[A-Za-z0-9]+$/, "not a token id") }) },
      responses: { 200: json(z.object({ revoked: z.literal(true) })), ...errorResponses, 409: conflictResponse("Revoking the last admin token") },
    }),
    async (c) => {
      const p = c.get("principal");
      requireAdmin(p);
      const { id } = c.req.valid("param");
      // The API cannot create admin tokens, so revoking the last live one would lock everyone
      // out (embedded mode makes a new one only when its admin-token file is missing).
      const tokens = await listTokens(deps);
      const target = tokens.find((t) => t.id === id);
      if (target?.kind === "admin" && !target.revokedAt && !tokens.some((t) => t.kind === "admin" && t.id !== id && !t.revokedAt)) {
        throw conflict("this is the last admin token: revoking it would leave nobody able to administer Rotor");
      }
      await revokeToken(deps, actorOf(p), id);
      return c.json({ revoked: true as const }, 200);
    },
  );
}
