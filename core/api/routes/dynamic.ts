import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, authorizeConfig, type Principal } from "../../auth/tokens.ts";
import { CreateDynamicSchema, createDynamic, deleteDynamic, getDynamic, listDynamic } from "../../dynamic/manage.ts";
import { listLeases, loadLease, renewLease, revokeLease } from "../../dynamic/leases.ts";
import type { RotationDeps } from "../../rotation/model.ts";
import type { Api, RouteModule } from "../app.ts";
import { ConfigName, ConfigQuery, ProjectName, SecretName, errorResponses, json, jsonBody } from "../schemas.ts";

const DynamicView = z
  .object({
    project: z.string(),
    config: z.string(),
    name: z.string(),
    provider: z.string(),
    connection: z.object({ host: z.string(), port: z.number(), database: z.string() }).nullable(),
    managingUsername: z.string().nullable(),
    grants: z.array(z.string()),
    integration: z.string().nullable(),
    policy: z.string().nullable(),
    defaultTtlSec: z.number(),
    maxTtlSec: z.number(),
    maxLeases: z.number(),
    activeLeases: z.number(),
    createdAt: z.string(),
  })
  .openapi("DynamicSecret");

const LeaseView = z
  .object({
    leaseId: z.string(),
    project: z.string(),
    config: z.string(),
    dynamic: z.string(),
    provider: z.string(),
    username: z.string().optional(),
    state: z.string(),
    createdAt: z.string(),
    expiresAt: z.string(),
    maxExpiresAt: z.string(),
    revokedAt: z.string().nullable(),
    revokeFailures: z.number(),
    stuck: z.boolean(),
    forced: z.boolean(),
    lastError: z.object({ code: z.string(), message: z.string(), at: z.string() }).nullable(),
  })
  .openapi("Lease");

const LeaseId = z.object({ id: z.string().regex(/^lease_[A-Za-z0-9]+$/, "not a lease id") });

export function dynamicRoutes(deps: RotationDeps): RouteModule {
  const leaseScope = async (p: Principal, leaseId: string, need: "read" | "write") => {
    const lease = await loadLease(deps, leaseId);
    authorizeConfig(p, lease.project, lease.config, need);
    return lease;
  };
  return (app: Api) => {
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/configs/config/dynamic_secrets",
        summary: "Create a dynamic secret (the integration is checked first)",
        request: { body: jsonBody(CreateDynamicSchema) },
        responses: { 200: json(z.object({ dynamicSecret: DynamicView })), ...errorResponses },
      }),
      async (c) => {
        const body = c.req.valid("json");
        const p = c.get("principal");
        authorizeConfig(p, body.project, body.config, "write");
        return c.json({ dynamicSecret: await createDynamic(deps, actorOf(p), body) }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "get",
        path: "/v3/configs/config/dynamic_secrets",
        summary: "List a config's dynamic secrets, or one by name",
        request: { query: ConfigQuery.extend({ name: SecretName.optional() }) },
        responses: { 200: json(z.object({ dynamicSecrets: z.array(DynamicView) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        authorizeConfig(c.get("principal"), q.project, q.config, "read");
        const dynamicSecrets = q.name ? [await getDynamic(deps, { project: q.project, config: q.config, name: q.name })] : await listDynamic(deps, q.project, q.config);
        return c.json({ dynamicSecrets }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "delete",
        path: "/v3/configs/config/dynamic_secret",
        summary: "Delete a dynamic secret (refused while it has active leases)",
        request: { query: ConfigQuery.extend({ name: SecretName }) },
        responses: { 200: json(z.object({ deleted: z.literal(true) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        const p = c.get("principal");
        authorizeConfig(p, q.project, q.config, "write");
        await deleteDynamic(deps, actorOf(p), q);
        return c.json({ deleted: true as const }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "get",
        path: "/v3/leases",
        summary: "Active leases of a config (all, or of one dynamic secret)",
        request: { query: z.object({ project: ProjectName, config: ConfigName, dynamic: SecretName.optional(), include_revoked: z.enum(["true", "false"]).optional() }) },
        responses: { 200: json(z.object({ leases: z.array(LeaseView) })), ...errorResponses },
      }),
      async (c) => {
        const q = c.req.valid("query");
        authorizeConfig(c.get("principal"), q.project, q.config, "read");
        return c.json({ leases: await listLeases(deps, { ...q, includeRevoked: q.include_revoked === "true" }) }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/leases/{id}/renew",
        summary: "Renew a lease (never past the max TTL from its creation)",
        request: { params: LeaseId, body: jsonBody(z.object({ ttlSec: z.number().int("ttlSec must be whole seconds").positive("ttlSec must be positive") })) },
        responses: { 200: json(z.object({ lease: LeaseView.extend({ clampedToMaxTtl: z.boolean() }) })), ...errorResponses },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const p = c.get("principal");
        await leaseScope(p, id, "write");
        return c.json({ lease: await renewLease(deps, actorOf(p), id, c.req.valid("json").ttlSec) }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/leases/{id}/revoke",
        summary: "Revoke a lease now; `force` closes the record even when the target can't be reached",
        request: { params: LeaseId, body: { required: false, content: { "application/json": { schema: z.object({ force: z.boolean().optional() }) } } } },
        responses: { 200: json(z.object({ lease: LeaseView, outcome: z.string(), leftBehind: z.string().nullable() })), ...errorResponses },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const p = c.get("principal");
        await leaseScope(p, id, "write");
        const { outcome, leftBehind, ...lease } = await revokeLease(deps, id, { actor: actorOf(p), force: c.req.valid("json")?.force });
        return c.json({ lease, outcome, leftBehind }, 200);
      },
    );
    app.openapi(
      createRoute({
        method: "post",
        path: "/v3/leases/revoke",
        summary: "Revoke every active lease of a dynamic secret",
        request: { body: jsonBody(z.object({ project: ProjectName, config: ConfigName, dynamic: SecretName, force: z.boolean().optional() })) },
        responses: { 200: json(z.object({ revoked: z.array(z.string()), failed: z.array(z.object({ leaseId: z.string(), message: z.string() })) })), ...errorResponses },
      }),
      async (c) => {
        const body = c.req.valid("json");
        const p = c.get("principal");
        authorizeConfig(p, body.project, body.config, "write");
        const leases = await listLeases(deps, { project: body.project, config: body.config, dynamic: body.dynamic });
        const revoked: string[] = [];
        const failed: Array<{ leaseId: string; message: string }> = [];
        for (const l of leases) {
          try {
            await revokeLease(deps, l.leaseId, { actor: actorOf(p), force: body.force });
            revoked.push(l.leaseId);
          } catch (e) {
            failed.push({ leaseId: l.leaseId, message: (e as Error).message });
          }
        }
        return c.json({ revoked, failed }, 200);
      },
    );
  };
}
