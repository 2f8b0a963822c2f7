import { createRoute, z } from "@hono/zod-openapi";
import { actorOf, authorizeConfig, type Principal } from "../../auth/tokens.ts";
import type { Deps } from "../../context.ts";
import { getSecret, listVersions, setSecrets } from "../../secrets/static.ts";
import { readConfig, toEnvFormat } from "../../secrets/read.ts";
import { secretNameSchema } from "../../names.ts";
import type { Api } from "../app.ts";
import { ConfigName, ConfigQuery, ProjectName, SecretName, SecretValue, conflictResponse, errorResponses, json, jsonBody } from "../schemas.ts";

const booleanFlag = z.enum(["true", "false"]).optional().transform((v) => v === "true");
const ReadQuery = ConfigQuery.extend({
  include_dynamic_secrets: booleanFlag,
  dynamic_secrets_ttl_sec: z.coerce.number().int("dynamic_secrets_ttl_sec must be a whole number of seconds").positive("dynamic_secrets_ttl_sec must be positive").optional(),
});
/** The JSON schema of a secret name, generated from the zod schema that checks names. */
const { $schema: _, ...secretNameJsonSchema } = z.toJSONSchema(secretNameSchema) as Record<string, unknown> & { type: "string" };

/** Short enough to quote in a one-line error message. */
const quoteName = (name: string) => `'${name.length > 64 ? name.slice(0, 64) + "…" : name}'`;

/**
 * `{NAME: value | null}`. Names are checked on the raw JSON object, before the record is
 * built: a record silently drops a `__proto__` key (and would then skip its value check),
 * so checking the parsed record alone let `{"__proto__": ...}` through as a 200 that wrote nothing.
 */
const SecretsToSet = z
  .preprocess(
    (input, ctx) => {
      if (input === null || typeof input !== "object" || Array.isArray(input)) return input; // the record reports the type
      const names = Object.keys(input);
      if (names.length === 0) ctx.addIssue({ code: "custom", message: "secrets must name at least one secret", input });
      for (const name of names) {
        const check = SecretName.safeParse(name);
        if (!check.success) ctx.addIssue({ code: "custom", message: `${quoteName(name)}: ${check.error.issues[0]?.message}`, input });
      }
      return input;
    },
    z.record(z.string(), SecretValue.nullable()),
  )
  .openapi({
    description: "Secrets to set, by name; a null value deletes that secret.",
    minProperties: 1,
    // OpenAPI 3.1 (JSON Schema) keyword the metadata type (3.0-based) does not list.
    ...({ propertyNames: secretNameJsonSchema } as object),
  });

const SecretEntry = z.object({ raw: z.string(), computed: z.string(), version: z.number().optional(), source: z.string() }).openapi("Secret");

async function read(deps: Deps, principal: Principal, q: z.infer<typeof ReadQuery>) {
  authorizeConfig(principal, q.project, q.config, "read");
  return readConfig(deps, q.project, q.config, {
    actor: actorOf(principal),
    includeDynamic: q.include_dynamic_secrets,
    dynamicTtlSec: q.dynamic_secrets_ttl_sec,
  });
}

export function registerSecretRoutes(app: Api, deps: Deps) {
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/configs/config/secrets/download",
      summary: "Download a config's values as JSON or env lines",
      request: { query: ReadQuery.extend({ format: z.enum(["json", "env"]).default("json") }) },
      responses: {
        200: {
          description: "The values",
          content: { "application/json": { schema: z.record(z.string(), z.string()) }, "text/plain": { schema: z.string() } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const entries = await read(deps, c.get("principal"), q);
      const values = Object.fromEntries(Object.entries(entries).map(([k, e]) => [k, e.value]));
      if (q.format === "env") return c.text(toEnvFormat(values), 200);
      return c.json(values, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/configs/config/secrets",
      summary: "List a config's secrets with metadata",
      request: { query: ReadQuery },
      responses: { 200: json(z.object({ secrets: z.record(z.string(), SecretEntry) })), ...errorResponses },
    }),
    async (c) => {
      const entries = await read(deps, c.get("principal"), c.req.valid("query"));
      const secrets = Object.fromEntries(
        Object.entries(entries).map(([k, e]) => [k, { raw: e.value, computed: e.value, version: e.version, source: e.source }]),
      );
      return c.json({ secrets }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/v3/configs/config/secrets",
      summary: "Set secrets (a null value deletes)",
      request: {
        body: jsonBody(
          z.object({
            project: ProjectName,
            config: ConfigName,
            secrets: SecretsToSet,
          }),
        ),
      },
      responses: {
        200: json(z.object({ changed: z.array(z.object({ name: z.string(), version: z.number(), updatedAt: z.string() })) })),
        ...errorResponses,
        409: conflictResponse("A secret kept changing concurrently; retry"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const p = c.get("principal");
      authorizeConfig(p, body.project, body.config, "write");
      return c.json(await setSecrets(deps, actorOf(p), body.project, body.config, body.secrets), 200);
    },
  );

  const OneSecretQuery = ConfigQuery.extend({ name: SecretName });
  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/configs/config/secret",
      summary: "Read one static secret with its version",
      request: { query: OneSecretQuery },
      responses: {
        200: json(z.object({ name: z.string(), version: z.number(), updatedAt: z.string(), value: z.object({ raw: z.string(), computed: z.string() }) })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      authorizeConfig(c.get("principal"), q.project, q.config, "read");
      const s = await getSecret(deps, q.project, q.config, q.name);
      return c.json({ name: s.name, version: s.version, updatedAt: s.updatedAt, value: { raw: s.value, computed: s.value } }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/v3/configs/config/secret",
      summary: "Delete one static secret",
      request: { query: OneSecretQuery },
      responses: { 200: json(z.object({ deleted: z.boolean() })), ...errorResponses },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const p = c.get("principal");
      authorizeConfig(p, q.project, q.config, "write");
      const { changed } = await setSecrets(deps, actorOf(p), q.project, q.config, { [q.name]: null });
      return c.json({ deleted: changed.length > 0 }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v3/configs/config/secret/versions",
      summary: "A secret's version history (no values)",
      request: { query: OneSecretQuery },
      responses: {
        200: json(z.object({ versions: z.array(z.object({ version: z.number(), deleted: z.boolean(), updatedAt: z.string(), updatedBy: z.string() })) })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      authorizeConfig(c.get("principal"), q.project, q.config, "read");
      return c.json({ versions: await listVersions(deps, q.project, q.config, q.name) }, 200);
    },
  );
}
