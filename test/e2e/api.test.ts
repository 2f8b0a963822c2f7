/**
 * The HTTP API over real HTTP against a real embedded Rotor (dynalite on disk in a temp dir):
 * every route, every error, the authorization matrix, and that no token value ever leaks.
 * One server for the whole file; tests run in order and build on the setup in beforeAll.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnvFormat } from "../../core/secrets/read.ts";
import { scanRaw } from "../support/dynamo.ts";
import { startDynamicEnv, type DynamicEnv } from "../support/dynamic.ts";
import { apiRequest, startTestServer, type ApiOptions, type ApiResponse, type TestServer } from "../support/embedded.ts";
import { engines } from "../support/rotation.ts";

let rotor: TestServer;

/** The routes of the foundation (issue 2), as METHOD PATH. */
const FOUNDATION_ROUTES = [
  "POST /v3/projects",
  "GET /v3/projects",
  "POST /v3/configs",
  "GET /v3/configs",
  "GET /v3/configs/config/secrets/download",
  "GET /v3/configs/config/secrets",
  "POST /v3/configs/config/secrets",
  "GET /v3/configs/config/secret",
  "DELETE /v3/configs/config/secret",
  "GET /v3/configs/config/secret/versions",
  "POST /v3/tokens",
  "GET /v3/tokens",
  "DELETE /v3/tokens/{id}",
  "GET /v3/activity",
];

/** Every response this file received, to check afterwards that no token value leaked. */
const responses: Array<{ what: string; text: string; status: number; createdToken?: string }> = [];
/** Every token value this file saw: the admin token and each one created. */
const tokenValues = new Set<string>();

async function call<T = any>(method: string, path: string, opts: ApiOptions = {}): Promise<ApiResponse<T>> {
  const res = await rotor.api<T>(method, path, opts);
  const created = method === "POST" && path === "/v3/tokens" && res.status === 200 ? (res.json as { token?: string })?.token : undefined;
  if (created) tokenValues.add(created);
  responses.push({ what: `${method} ${path}${opts.query ? " " + JSON.stringify(opts.query) : ""}`, text: res.text, status: res.status, createdToken: created });
  return res;
}

let admin: string;
const tok = { read: "", readwrite: "", revoked: "", other: "" };

const P = "app";
const DEV = { project: P, config: "dev" };
const PROD = { project: P, config: "prod" };

async function adminCall<T = any>(method: string, path: string, opts: Omit<ApiOptions, "token"> = {}) {
  const res = await call<T>(method, path, { ...opts, token: admin });
  expect(res.status, `${method} ${path}: ${res.text}`).toBe(200);
  return res.json;
}
const setSecrets = (scope: { project: string; config: string }, secrets: Record<string, string | null>) =>
  adminCall<{ changed: Array<{ name: string; version: number; updatedAt: string }> }>("POST", "/v3/configs/config/secrets", { body: { ...scope, secrets } });
const download = async (scope: { project: string; config: string }) =>
  (await adminCall<Record<string, string>>("GET", "/v3/configs/config/secrets/download", { query: scope }));
async function createToken(scope: { project: string; config: string }, access: "read" | "read/write", name?: string) {
  return adminCall<{ id: string; token: string }>("POST", "/v3/tokens", { body: { ...scope, access, name } });
}

/** What an error answer must look like: a 4xx, JSON `{error, message}` (strings), no internals. */
function expectErrorBody(res: ApiResponse, status: number, code?: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.headers.get("content-type") ?? "").toMatch(/^application\/json/);
  expect(res.json, res.text).toEqual({ error: expect.any(String), message: expect.any(String) });
  expect(res.json.error.length).toBeGreaterThan(0);
  expect(res.json.message.length).toBeGreaterThan(0);
  if (code) expect(res.json.error).toBe(code);
  expect(res.text).not.toMatch(/\n\s+at |\bat \S+ \(|\.ts:\d+|node_modules|\bstack\b/);
}

/** Everything an admin can see, to check that a refused request changed nothing. */
async function snapshot() {
  const [projects, configs, dev, prod, tokens, activity] = await Promise.all([
    adminCall<{ projects: Array<{ name: string }> }>("GET", "/v3/projects").then((r) => r.projects),
    adminCall("GET", "/v3/configs", { query: { project: P } }).then((r) => r.configs),
    adminCall("GET", "/v3/configs/config/secrets", { query: DEV }).then((r) => r.secrets),
    adminCall("GET", "/v3/configs/config/secrets", { query: PROD }).then((r) => r.secrets),
    adminCall("GET", "/v3/tokens").then((r) => r.tokens),
    adminCall<{ activity: Array<{ id: string }> }>("GET", "/v3/activity", { query: { limit: 5 } }).then((r) => r.activity.map((e) => e.id)),
  ]);
  return { projects, configs, dev, prod, tokens, activity };
}

beforeAll(async () => {
  rotor = await startTestServer();
  admin = rotor.adminToken;
  tokenValues.add(admin);
  await adminCall("POST", "/v3/projects", { body: { name: P } });
  await adminCall("POST", "/v3/configs", { body: { project: P, name: "dev" } });
  await adminCall("POST", "/v3/configs", { body: { project: P, name: "prod" } });
  await setSecrets(DEV, { SHARED: "dev-value" });
  await setSecrets(PROD, { SHARED: "prod-value" });
  tok.read = (await createToken(DEV, "read", "dev reader")).token;
  tok.readwrite = (await createToken(DEV, "read/write", "dev writer")).token;
  tok.other = (await createToken(PROD, "read/write", "prod writer")).token;
  const revoked = await createToken(DEV, "read/write", "revoked");
  tok.revoked = revoked.token;
  await adminCall("DELETE", `/v3/tokens/${revoked.id}`);
});

afterAll(async () => {
  await rotor?.stop();
});

describe("public routes", () => {
  it("GET /health answers 200 without a token", async () => {
    const res = await call("GET", "/health");
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ ok: true });
  });

  it("GET /v3/openapi.json is a valid OpenAPI 3 document listing every route with its request schemas", async () => {
    const res = await call("GET", "/v3/openapi.json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const doc = res.json;
    expect(doc.openapi).toMatch(/^3\.[01]\.\d+$/);
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(doc.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer" });

    // Structure: every operation has responses with descriptions, a 2xx and the error schema;
    // every parameter has a name, a valid location and a schema; path parameters are required.
    const methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    const operations: string[] = [];
    for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
      expect(path.startsWith("/")).toBe(true);
      for (const [method, op] of Object.entries<any>(item)) {
        expect(methods, `${path}: ${method}`).toContain(method);
        operations.push(`${method.toUpperCase()} ${path}`);
        expect(Object.keys(op.responses).some((s) => /^2\d\d$/.test(s)), `${method} ${path} has a 2xx`).toBe(true);
        for (const [status, r] of Object.entries<any>(op.responses)) {
          expect(typeof r.description, `${method} ${path} ${status}`).toBe("string");
          if (/^4\d\d$/.test(status)) expect(r.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Error" });
        }
        for (const p of op.parameters ?? []) {
          expect(["query", "path", "header", "cookie"]).toContain(p.in);
          expect(typeof p.name).toBe("string");
          expect(p.schema).toBeTypeOf("object");
          if (p.in === "path") {
            expect(p.required).toBe(true);
            expect(path).toContain(`{${p.name}}`);
          }
        }
        for (const m of path.matchAll(/\{(\w+)\}/g)) expect((op.parameters ?? []).some((p: any) => p.in === "path" && p.name === m[1])).toBe(true);
      }
    }
    // Every $ref points at something that exists.
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"([^"]+)"/g)].map((m) => m[1]);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) {
      const target = ref.replace(/^#\//, "").split("/").reduce((node: any, key) => node?.[key], doc);
      expect(target, ref).toBeTypeOf("object");
    }
    expect(doc.components.schemas.Error).toMatchObject({ type: "object", required: expect.arrayContaining(["error", "message"]) });

    // Later capabilities add routes of their own; the foundation's must all be there.
    expect(operations).toEqual(expect.arrayContaining(FOUNDATION_ROUTES));

    // Request schemas: the same zod schemas that validate requests.
    const body = (method: string, path: string) => {
      const rb = doc.paths[path][method].requestBody;
      expect(rb?.required, `${method} ${path} body required`).toBe(true);
      return rb.content["application/json"].schema;
    };
    const params = (method: string, path: string) =>
      Object.fromEntries((doc.paths[path][method].parameters ?? []).map((p: any) => [`${p.in}:${p.name}`, { required: !!p.required, schema: p.schema }]));
    const slug = { type: "string", pattern: "^[a-z0-9][a-z0-9_-]{0,63}$" };
    const secretName = { type: "string", pattern: "^[A-Z_][A-Z0-9_]*$", maxLength: 256 };

    expect(body("post", "/v3/projects")).toMatchObject({ type: "object", required: ["name"], properties: { name: slug, notifyEmail: { type: "string" } } });
    expect(body("post", "/v3/configs")).toMatchObject({ type: "object", required: ["project", "name"], properties: { project: slug, name: slug } });
    const setBody = body("post", "/v3/configs/config/secrets");
    expect(setBody).toMatchObject({ type: "object", required: ["project", "config", "secrets"], properties: { project: slug, config: slug, secrets: { type: "object" } } });
    expect(setBody.properties.secrets.additionalProperties.type).toEqual(expect.arrayContaining(["string", "null"]));
    expect(setBody.properties.secrets.additionalProperties.description).toMatch(/64 KiB/);
    expect(setBody.properties.secrets.propertyNames).toEqual(secretName);
    expect(setBody.properties.secrets.minProperties).toBe(1);
    for (const path of ["/v3/projects", "/v3/configs"]) expect(doc.paths[path].post.responses["409"]).toBeDefined();
    expect(body("post", "/v3/tokens")).toMatchObject({
      type: "object",
      required: expect.arrayContaining(["project", "config"]),
      properties: { project: slug, config: slug, access: { enum: ["read", "read/write"] } },
    });

    expect(params("get", "/v3/configs")).toMatchObject({ "query:project": { required: true, schema: slug } });
    const readParams = { "query:project": { required: true, schema: slug }, "query:config": { required: true, schema: slug } };
    expect(params("get", "/v3/configs/config/secrets")).toMatchObject({
      ...readParams,
      "query:include_dynamic_secrets": { required: false },
      "query:dynamic_secrets_ttl_sec": { required: false },
    });
    expect(params("get", "/v3/configs/config/secrets/download")).toMatchObject({ ...readParams, "query:format": { required: false, schema: { enum: ["json", "env"] } } });
    for (const [m, path] of [["get", "/v3/configs/config/secret"], ["delete", "/v3/configs/config/secret"], ["get", "/v3/configs/config/secret/versions"]]) {
      expect(params(m, path), `${m} ${path}`).toMatchObject({ ...readParams, "query:name": { required: true, schema: secretName } });
    }
    expect(params("delete", "/v3/tokens/{id}")).toMatchObject({ "path:id": { required: true, schema: { type: "string" } } });
    expect(params("get", "/v3/activity")).toMatchObject({ "query:project": { required: false }, "query:limit": { required: false }, "query:before": { required: false } });
    for (const path of ["/v3/projects", "/v3/tokens"]) expect(doc.paths[path].get.parameters ?? []).toEqual([]);
  });
});

describe("projects and configs", () => {
  it("creates and lists projects", async () => {
    const created = await adminCall("POST", "/v3/projects", { body: { name: "billing", notifyEmail: "ops@example.com" } });
    expect(created.project).toMatchObject({ name: "billing", notifyEmail: "ops@example.com", createdAt: expect.any(String) });
    expect(new Date(created.project.createdAt).toISOString()).toBe(created.project.createdAt);
    const { projects } = await adminCall("GET", "/v3/projects");
    expect(projects.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining([P, "billing"]));
    expect(projects.find((p: { name: string }) => p.name === "billing")).toEqual(created.project);
  });

  it("creates and lists a project's configs", async () => {
    const created = await adminCall("POST", "/v3/configs", { body: { project: "billing", name: "staging" } });
    expect(created.config).toMatchObject({ project: "billing", name: "staging", createdAt: expect.any(String) });
    await adminCall("POST", "/v3/configs", { body: { project: "billing", name: "prod_eu-1" } });
    const { configs } = await adminCall("GET", "/v3/configs", { query: { project: "billing" } });
    expect(configs.map((c: { name: string }) => c.name).sort()).toEqual(["prod_eu-1", "staging"]);
    expect(configs.every((c: { project: string }) => c.project === "billing")).toBe(true);
    // Configs of another project stay apart.
    const app = await adminCall("GET", "/v3/configs", { query: { project: P } });
    expect(app.configs.map((c: { name: string }) => c.name).sort()).toEqual(["dev", "prod"]);
  });

  it("a new config starts empty", async () => {
    expect(await download({ project: "billing", config: "staging" })).toEqual({});
    const list = await adminCall("GET", "/v3/configs/config/secrets", { query: { project: "billing", config: "staging" } });
    expect(list).toEqual({ secrets: {} });
  });
});

describe("secrets", () => {
  const S = { project: "billing", config: "staging" };

  it("sets several secrets at once; each gets version 1; get shows value and version", async () => {
    const out = await setSecrets(S, { DATABASE_URL: "postgres://u:p@h/db", API_KEY: "k-1", _UNDERSCORE: "u" });
    expect(out.changed.map((c) => [c.name, c.version]).sort()).toEqual([["API_KEY", 1], ["DATABASE_URL", 1], ["_UNDERSCORE", 1]]);
    for (const c of out.changed) expect(new Date(c.updatedAt).toISOString()).toBe(c.updatedAt);
    const one = await adminCall("GET", "/v3/configs/config/secret", { query: { ...S, name: "DATABASE_URL" } });
    expect(one).toEqual({ name: "DATABASE_URL", version: 1, updatedAt: expect.any(String), value: { raw: "postgres://u:p@h/db", computed: "postgres://u:p@h/db" } });
  });

  it("every change makes a new version", async () => {
    const out = await setSecrets(S, { API_KEY: "k-2" });
    expect(out.changed).toEqual([{ name: "API_KEY", version: 2, updatedAt: expect.any(String) }]);
    const one = await adminCall("GET", "/v3/configs/config/secret", { query: { ...S, name: "API_KEY" } });
    expect(one).toMatchObject({ version: 2, value: { raw: "k-2" } });
  });

  it("lists secrets with metadata, sorted by name", async () => {
    const { secrets } = await adminCall("GET", "/v3/configs/config/secrets", { query: S });
    expect(Object.keys(secrets)).toEqual(["API_KEY", "DATABASE_URL", "_UNDERSCORE"]);
    expect(secrets.API_KEY).toEqual({ raw: "k-2", computed: "k-2", version: 2, source: "static" });
    expect(secrets.DATABASE_URL).toEqual({ raw: "postgres://u:p@h/db", computed: "postgres://u:p@h/db", version: 1, source: "static" });
  });

  it("downloads JSON by default", async () => {
    const res = await call("GET", "/v3/configs/config/secrets/download", { token: admin, query: S });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.json).toEqual({ API_KEY: "k-2", DATABASE_URL: "postgres://u:p@h/db", _UNDERSCORE: "u" });
    const explicit = await call("GET", "/v3/configs/config/secrets/download", { token: admin, query: { ...S, format: "json" } });
    expect(explicit.json).toEqual(res.json);
  });

  it("downloads env lines, escaping quotes, newlines, backslashes and $, and they parse back exactly", async () => {
    const E = { project: P, config: "dev" };
    const values: Record<string, string> = {
      QUOTE: 'say "hi"',
      NEWLINE: "line1\nline2\n",
      CRLF: "a\r\nb",
      BACKSLASH: "C:\\path\\to\\new",
      BACKSLASH_N: "literal \\n stays",
      TRAILING_BACKSLASH: "ends with \\",
      DOLLAR: "$HOME and ${PATH} and \\$x and $(whoami)",
      MIXED: "\"\\$\n'`",
      EMPTY: "",
      UNICODE: "héllo ✓ 🔑",
      EQUALS_HASH: "a=b # not a comment",
      SPACES: "  padded  ",
      SINGLE: "it's",
    };
    await setSecrets(E, values);
    const res = await call("GET", "/v3/configs/config/secrets/download", { token: admin, query: { ...E, format: "env" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const lines = res.text.split("\n");
    expect(lines.pop()).toBe(""); // ends with a newline
    const all = { ...values, SHARED: "dev-value" };
    expect(lines).toHaveLength(Object.keys(all).length); // no value spills over a line
    for (const line of lines) expect(line).toMatch(/^[A-Z_][A-Z0-9_]*="([^"\\$\n\r]|\\.)*"$/);
    expect(lines).toContain('QUOTE="say \\"hi\\""');
    expect(lines).toContain('NEWLINE="line1\\nline2\\n"');
    expect(lines).toContain('CRLF="a\\r\\nb"');
    expect(lines).toContain('BACKSLASH="C:\\\\path\\\\to\\\\new"');
    expect(lines).toContain('TRAILING_BACKSLASH="ends with \\\\"');
    expect(lines).toContain('DOLLAR="\\$HOME and \\${PATH} and \\\\\\$x and \\$(whoami)"');
    expect(lines).toContain('EMPTY=""');
    expect(lines).toContain('UNICODE="héllo ✓ 🔑"');
    // Names in order, as in JSON.
    expect(lines.map((l) => l.split("=")[0])).toEqual(Object.keys(all).sort());
    expect(parseEnvFormat(res.text)).toEqual(all);
    expect(await download(E)).toEqual(all);
  });

  it("a null value deletes: a tombstone version, gone from reads, and the chain goes on", async () => {
    const out = await setSecrets(S, { API_KEY: null, _UNDERSCORE: "u2" });
    expect(out.changed.map((c) => [c.name, c.version]).sort()).toEqual([["API_KEY", 3], ["_UNDERSCORE", 2]]);
    const get = await call("GET", "/v3/configs/config/secret", { token: admin, query: { ...S, name: "API_KEY" } });
    expectErrorBody(get, 404, "not_found");
    expect(await download(S)).toEqual({ DATABASE_URL: "postgres://u:p@h/db", _UNDERSCORE: "u2" });
    // Deleting what is not there changes nothing.
    expect((await setSecrets(S, { API_KEY: null })).changed).toEqual([]);
    // Setting it again continues the version chain.
    expect((await setSecrets(S, { API_KEY: "k-4" })).changed).toEqual([{ name: "API_KEY", version: 4, updatedAt: expect.any(String) }]);
  });

  it("DELETE /v3/configs/config/secret deletes one secret", async () => {
    expect(await adminCall("DELETE", "/v3/configs/config/secret", { query: { ...S, name: "API_KEY" } })).toEqual({ deleted: true });
    expect(await download(S)).toEqual({ DATABASE_URL: "postgres://u:p@h/db", _UNDERSCORE: "u2" });
    expect(await adminCall("DELETE", "/v3/configs/config/secret", { query: { ...S, name: "API_KEY" } })).toEqual({ deleted: false });
    expect(await adminCall("DELETE", "/v3/configs/config/secret", { query: { ...S, name: "NEVER_EXISTED" } })).toEqual({ deleted: false });
  });

  it("lists a secret's versions without values", async () => {
    const { versions } = await adminCall("GET", "/v3/configs/config/secret/versions", { query: { ...S, name: "API_KEY" } });
    expect(versions.map((v: { version: number; deleted: boolean }) => [v.version, v.deleted])).toEqual([
      [1, false],
      [2, false],
      [3, true],
      [4, false],
      [5, true],
    ]);
    for (const v of versions) expect(v).toEqual({ version: expect.any(Number), deleted: expect.any(Boolean), updatedAt: expect.any(String), updatedBy: expect.stringMatching(/^admin:tok_/) });
    expect(JSON.stringify(versions)).not.toMatch(/k-\d/);
    expect(await adminCall("GET", "/v3/configs/config/secret/versions", { query: { ...S, name: "NEVER_EXISTED" } })).toEqual({ versions: [] });
  });

  it("service tokens read and write their own config; the actor is recorded", async () => {
    const rw = await call("POST", "/v3/configs/config/secrets", { token: tok.readwrite, body: { ...DEV, secrets: { FROM_SERVICE: "svc" } } });
    expect(rw.status).toBe(200);
    const read = await call("GET", "/v3/configs/config/secret", { token: tok.read, query: { ...DEV, name: "FROM_SERVICE" } });
    expect(read.json).toMatchObject({ name: "FROM_SERVICE", version: 1, value: { raw: "svc" } });
    const { versions } = await adminCall("GET", "/v3/configs/config/secret/versions", { query: { ...DEV, name: "FROM_SERVICE" } });
    expect(versions[0].updatedBy).toMatch(/^service:tok_/);
    expect(await adminCall("DELETE", "/v3/configs/config/secret", { query: { ...DEV, name: "FROM_SERVICE" } })).toEqual({ deleted: true });
  });

  it("accepts a name of exactly 256 characters and a value of exactly 64 KiB (UTF-8 bytes)", async () => {
    const L = { project: "billing", config: "prod_eu-1" };
    const longName = "A".repeat(256);
    const ascii = "x".repeat(64 * 1024);
    const multibyte = "é".repeat(32 * 1024); // 2 bytes each: 65536 bytes
    expect(Buffer.byteLength(multibyte)).toBe(65536);
    await setSecrets(L, { [longName]: "long", BIG: ascii, BIG_UTF8: multibyte });
    expect(await download(L)).toEqual({ [longName]: "long", BIG: ascii, BIG_UTF8: multibyte });
    const one = await adminCall("GET", "/v3/configs/config/secret", { query: { ...L, name: "BIG_UTF8" } });
    expect(one.value.raw).toBe(multibyte);
  });

  it("stores no plaintext value in the table", async () => {
    const items = JSON.stringify(await scanRaw(rotor.embedded.deps.table.client, rotor.embedded.deps.table.name));
    for (const v of ["postgres://u:p@h/db", "héllo ✓ 🔑", "say \\\"hi\\\"", "dev-value", "prod-value"]) expect(items).not.toContain(v);
  });
});

describe("tokens", () => {
  it("creates a service token: the value is returned once, prefixed, and works", async () => {
    const res = await call("POST", "/v3/tokens", { token: admin, body: { ...PROD, access: "read", name: "ci" } });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ id: expect.stringMatching(/^tok_[A-Za-z0-9]+$/), token: expect.stringMatching(/^rtr_svc_[A-Za-z0-9_-]{32,}$/) });
    const read = await call("GET", "/v3/configs/config/secrets/download", { token: res.json.token, query: PROD });
    expect(read.status).toBe(200);
    expect(read.json).toEqual({ SHARED: "prod-value" });
    // access defaults to read
    const dflt = await call("POST", "/v3/tokens", { token: admin, body: { ...PROD } });
    expect(dflt.status).toBe(200);
    const { tokens } = await adminCall("GET", "/v3/tokens");
    expect(tokens.find((t: { id: string }) => t.id === dflt.json.id)).toMatchObject({ kind: "service", access: "read", project: P, config: "prod" });
  });

  it("lists tokens with their scope and never their values or hashes", async () => {
    const res = await call("GET", "/v3/tokens", { token: admin });
    const { tokens } = res.json;
    expect(tokens.length).toBeGreaterThanOrEqual(6);
    const allowed = ["id", "kind", "project", "config", "access", "name", "createdAt", "revokedAt"];
    for (const t of tokens) {
      for (const k of Object.keys(t)) expect(allowed, `token field ${k}`).toContain(k);
      expect(t.id).toMatch(/^tok_/);
    }
    expect(tokens.filter((t: { kind: string }) => t.kind === "admin")).toHaveLength(1);
    expect(tokens.find((t: { name?: string }) => t.name === "dev writer")).toMatchObject({ kind: "service", project: P, config: "dev", access: "read/write" });
    expect(tokens.find((t: { name?: string }) => t.name === "revoked")).toMatchObject({ revokedAt: expect.any(String) });
    expect(res.text).not.toMatch(/rtr_/);
    expect(res.text).not.toMatch(/[0-9a-f]{64}/); // no SHA-256 hash either
  });

  it("revokes a token: it stops working at once; revoking again is harmless", async () => {
    const t = await createToken(DEV, "read");
    expect((await call("GET", "/v3/configs/config/secrets", { token: t.token, query: DEV })).status).toBe(200);
    expect(await adminCall("DELETE", `/v3/tokens/${t.id}`)).toEqual({ revoked: true });
    expectErrorBody(await call("GET", "/v3/configs/config/secrets", { token: t.token, query: DEV }), 401, "unauthorized");
    expect(await adminCall("DELETE", `/v3/tokens/${t.id}`)).toEqual({ revoked: true });
    const { tokens } = await adminCall("GET", "/v3/tokens");
    expect(tokens.find((x: { id: string }) => x.id === t.id).revokedAt).toEqual(expect.any(String));
  });
});

describe("the last admin token", () => {
  it("cannot be revoked (nobody could administer Rotor any more); a service token still can", async () => {
    const { tokens } = await adminCall("GET", "/v3/tokens");
    const adminId = tokens.find((t: { kind: string }) => t.kind === "admin").id;
    const before = await snapshot();
    const res = await call("DELETE", `/v3/tokens/${adminId}`, { token: admin });
    expectErrorBody(res, 409, "conflict");
    expect(res.json.message).toMatch(/last admin token/);
    expect(await snapshot()).toEqual(before);
    expect((await call("GET", "/v3/projects", { token: admin })).status).toBe(200);
  });
});

describe("activity", () => {
  it("records every change, newest first, with actor and scope and without values", async () => {
    const res = await call("GET", "/v3/activity", { token: admin, query: { limit: 500 } });
    expect(res.status).toBe(200);
    const { activity } = res.json as { activity: Array<{ id: string; type: string; at: string; actor: string; project?: string; config?: string; detail: any; cursor: string }> };
    const types = new Set(activity.map((a) => a.type));
    for (const t of ["project.created", "config.created", "secrets.changed", "token.created", "token.revoked"]) expect(types).toContain(t);
    for (let i = 1; i < activity.length; i++) expect(activity[i - 1].cursor > activity[i].cursor).toBe(true);
    for (const a of activity) {
      expect(a.actor).toMatch(/^(admin|service|system):/);
      expect(a.cursor.startsWith(a.at)).toBe(true);
    }
    const deletion = activity.find((a) => a.type === "secrets.changed" && a.project === "billing" && a.detail.deleted?.includes("API_KEY"));
    expect(deletion).toMatchObject({ config: "staging", detail: { names: expect.arrayContaining(["API_KEY"]) } });
    expect(activity.find((a) => a.type === "project.created" && a.project === "billing")?.actor).toMatch(/^admin:tok_/);
    for (const v of ["postgres://u:p@h/db", "dev-value", "k-2", "héllo"]) expect(res.text).not.toContain(v);
  });

  it("pages with limit and before, and filters by project", async () => {
    const first = await adminCall("GET", "/v3/activity", { query: { limit: 2 } });
    expect(first.activity).toHaveLength(2);
    expect(first.next).toBe(first.activity[1].cursor);
    const second = await adminCall("GET", "/v3/activity", { query: { limit: 2, before: first.next } });
    expect(second.activity).toHaveLength(2);
    expect(second.activity[0].cursor < first.activity[1].cursor).toBe(true);
    const all = await adminCall("GET", "/v3/activity", { query: { limit: 500 } });
    expect(all.next).toBeUndefined();
    expect([...first.activity, ...second.activity].map((a: { id: string }) => a.id)).toEqual(all.activity.slice(0, 4).map((a: { id: string }) => a.id));
    const billing = await adminCall("GET", "/v3/activity", { query: { project: "billing", limit: 500 } });
    expect(billing.activity.length).toBeGreaterThan(0);
    expect(billing.activity.every((a: { project?: string }) => a.project === "billing")).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Errors: each answers the right 4xx with {error, message} and changes nothing.

type Who = "admin" | "read" | "readwrite" | "other" | "revoked" | "none" | "garbage";
/** Shaped like a service token, but no such token exists. */
const GARBAGE_TOKEN = `rtr_svc_${"g".repeat(43)}`;
const tokenOf = (who: Who): string | undefined => (who === "admin" ? admin : who === "none" ? undefined : who === "garbage" ? GARBAGE_TOKEN : tok[who]);

interface ErrorCase {
  name: string;
  who?: Who;
  method: string;
  path: string;
  opts?: Omit<ApiOptions, "token">;
  status: number;
  code?: string;
}
const jsonRaw = (rawBody: string) => ({ rawBody, headers: { "content-type": "application/json" } });
const setBody = (secrets: unknown, scope: object = DEV) => ({ body: { ...scope, secrets } });
const tooBig = "x".repeat(64 * 1024 + 1);

const errorCases: ErrorCase[] = [
  // malformed and wrong content
  { name: "malformed JSON (set secrets)", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw('{"project":"app","config":"dev","secrets":{"A":"1"'), status: 400, code: "invalid_request" },
  { name: "malformed JSON (create project)", method: "POST", path: "/v3/projects", opts: jsonRaw("{name: 'x'}"), status: 400, code: "invalid_request" },
  { name: "malformed JSON (create config)", method: "POST", path: "/v3/configs", opts: jsonRaw("not json"), status: 400, code: "invalid_request" },
  { name: "malformed JSON (create token)", method: "POST", path: "/v3/tokens", opts: jsonRaw('{"project":'), status: 400, code: "invalid_request" },
  { name: "empty JSON body", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw(""), status: 400, code: "invalid_request" },
  { name: "JSON null body", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw("null"), status: 400, code: "invalid_request" },
  { name: "JSON array body", method: "POST", path: "/v3/projects", opts: jsonRaw('["x"]'), status: 400, code: "invalid_request" },
  { name: "body as text/plain", method: "POST", path: "/v3/configs/config/secrets", opts: { rawBody: JSON.stringify({ ...DEV, secrets: { TEXT_PLAIN: "1" } }), headers: { "content-type": "text/plain" } }, status: 415 },
  { name: "body as a form", method: "POST", path: "/v3/projects", opts: { rawBody: "name=formproject", headers: { "content-type": "application/x-www-form-urlencoded" } }, status: 415 },
  { name: "body without content type", method: "POST", path: "/v3/projects", opts: { rawBody: '{"name":"nocontenttype"}' }, status: 415 },
  { name: "secrets is a string", method: "POST", path: "/v3/configs/config/secrets", opts: setBody("A=1"), status: 400, code: "invalid_request" },
  { name: "secret value is a number", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ NUM: 5 }), status: 400, code: "invalid_request" },
  { name: "no secrets named", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({}), status: 400, code: "invalid_request" },
  { name: "missing config in body", method: "POST", path: "/v3/configs/config/secrets", opts: { body: { project: P, secrets: { A: "1" } } }, status: 400, code: "invalid_request" },
  { name: "missing project name", method: "POST", path: "/v3/projects", opts: { body: {} }, status: 400, code: "invalid_request" },
  { name: "bad project name (uppercase)", method: "POST", path: "/v3/projects", opts: { body: { name: "Billing" } }, status: 400, code: "invalid_request" },
  { name: "bad project name (has #)", method: "POST", path: "/v3/projects", opts: { body: { name: "a#b" } }, status: 400, code: "invalid_request" },
  { name: "bad notify email", method: "POST", path: "/v3/projects", opts: { body: { name: "mailx", notifyEmail: "not-an-email" } }, status: 400, code: "invalid_request" },
  { name: "bad config name", method: "POST", path: "/v3/configs", opts: { body: { project: P, name: "Dev Env" } }, status: 400, code: "invalid_request" },
  { name: "bad token access", method: "POST", path: "/v3/tokens", opts: { body: { ...DEV, access: "admin" } }, status: 400, code: "invalid_request" },
  { name: "bad download format", method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: { ...DEV, format: "xml" } }, status: 400, code: "invalid_request" },
  { name: "missing config in query", method: "GET", path: "/v3/configs/config/secrets", opts: { query: { project: P } }, status: 400, code: "invalid_request" },
  { name: "bad dynamic ttl", method: "GET", path: "/v3/configs/config/secrets", opts: { query: { ...DEV, dynamic_secrets_ttl_sec: "soon" } }, status: 400, code: "invalid_request" },
  { name: "bad include_dynamic_secrets", method: "GET", path: "/v3/configs/config/secrets", opts: { query: { ...DEV, include_dynamic_secrets: "yes" } }, status: 400, code: "invalid_request" },
  { name: "activity limit 0", method: "GET", path: "/v3/activity", opts: { query: { limit: 0 } }, status: 400, code: "invalid_request" },
  { name: "activity limit not a number", method: "GET", path: "/v3/activity", opts: { query: { limit: "many" } }, status: 400, code: "invalid_request" },
  { name: "bad token id", method: "DELETE", path: "/v3/tokens/not-a-token", status: 400, code: "invalid_request" },
  { name: "body over 8 MiB", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw(JSON.stringify({ ...DEV, secrets: { HUGE: "x".repeat(9 * 1024 * 1024) } })), status: 413, code: "too_large" },
  // unknown things
  { name: "unknown project (set)", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ A: "1" }, { project: "nope", config: "dev" }), status: 404, code: "not_found" },
  { name: "unknown config (set)", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ A: "1" }, { project: P, config: "nope" }), status: 404, code: "not_found" },
  { name: "unknown config (download)", method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: { project: P, config: "nope" } }, status: 404, code: "not_found" },
  { name: "unknown project (download)", method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: { project: "nope", config: "dev" } }, status: 404, code: "not_found" },
  { name: "unknown config (list)", method: "GET", path: "/v3/configs/config/secrets", opts: { query: { project: P, config: "nope" } }, status: 404, code: "not_found" },
  { name: "unknown config (get)", method: "GET", path: "/v3/configs/config/secret", opts: { query: { project: P, config: "nope", name: "SHARED" } }, status: 404, code: "not_found" },
  { name: "unknown config (delete)", method: "DELETE", path: "/v3/configs/config/secret", opts: { query: { project: P, config: "nope", name: "SHARED" } }, status: 404, code: "not_found" },
  { name: "unknown config (versions)", method: "GET", path: "/v3/configs/config/secret/versions", opts: { query: { project: P, config: "nope", name: "SHARED" } }, status: 404, code: "not_found" },
  { name: "unknown secret (get)", method: "GET", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "NO_SUCH_SECRET" } }, status: 404, code: "not_found" },
  { name: "unknown project (create config)", method: "POST", path: "/v3/configs", opts: { body: { project: "nope", name: "dev" } }, status: 404, code: "not_found" },
  { name: "unknown project (list configs)", method: "GET", path: "/v3/configs", opts: { query: { project: "nope" } }, status: 404, code: "not_found" },
  { name: "unknown config (create token)", method: "POST", path: "/v3/tokens", opts: { body: { project: P, config: "nope", access: "read" } }, status: 404, code: "not_found" },
  { name: "unknown token id (revoke)", method: "DELETE", path: "/v3/tokens/tok_doesnotexist", status: 404, code: "not_found" },
  { name: "unknown route", method: "GET", path: "/v3/nothing-here", status: 404, code: "not_found" },
  { name: "unknown method on a route", method: "PUT", path: "/v3/projects", opts: { body: { name: "put" } }, status: 404, code: "not_found" },
  // conflicts
  { name: "duplicate project", method: "POST", path: "/v3/projects", opts: { body: { name: P } }, status: 409, code: "conflict" },
  { name: "duplicate config", method: "POST", path: "/v3/configs", opts: { body: { project: P, name: "dev" } }, status: 409, code: "conflict" },
  // bad secret names and values
  { name: "lowercase secret name", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ lower: "1" }), status: 400, code: "invalid_request" },
  { name: "secret name starting with a digit", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ "1ABC": "1" }), status: 400, code: "invalid_request" },
  { name: "secret name of 257 characters", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ ["A".repeat(257)]: "1" }), status: 400, code: "invalid_request" },
  { name: "secret name with a dash", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ "MY-KEY": "1" }), status: 400, code: "invalid_request" },
  { name: "empty secret name", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ "": "1" }), status: 400, code: "invalid_request" },
  { name: "__proto__ as a secret name", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw('{"project":"app","config":"dev","secrets":{"__proto__":"x"}}'), status: 400, code: "invalid_request" },
  { name: "__proto__ among good names", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw('{"project":"app","config":"dev","secrets":{"GOOD_ONE":"1","__proto__":"x"}}'), status: 400, code: "invalid_request" },
  { name: "__proto__ with an object value", method: "POST", path: "/v3/configs/config/secrets", opts: jsonRaw('{"project":"app","config":"dev","secrets":{"GOOD_ONE":"1","__proto__":{"SHARED":"hacked"}}}'), status: 400, code: "invalid_request" },
  { name: "one bad name among good ones writes none", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ GOOD_ONE: "1", bad: "2", GOOD_TWO: "3" }), status: 400, code: "invalid_request" },
  { name: "value over 64 KiB", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ TOO_BIG: tooBig }), status: 400, code: "invalid_request" },
  { name: "value over 64 KiB in UTF-8 bytes", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ TOO_BIG: "é".repeat(32 * 1024) + "x" }), status: 400, code: "invalid_request" },
  { name: "one value too big among good ones writes none", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ GOOD_ONE: "1", TOO_BIG: tooBig }), status: 400, code: "invalid_request" },
  { name: "bad secret name in a query", method: "GET", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "shared" } }, status: 400, code: "invalid_request" },
  { name: "bad secret name to delete", method: "DELETE", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "9LIVES" } }, status: 400, code: "invalid_request" },
  // authentication and scope
  { name: "missing token", who: "none", method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: DEV }, status: 401, code: "unauthorized" },
  { name: "missing token (write)", who: "none", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ SHARED: "hacked" }), status: 401, code: "unauthorized" },
  { name: "wrong token", method: "GET", path: "/v3/projects", opts: { headers: { authorization: "Bearer rtr_admin_wrongwrongwrong" } }, status: 401, code: "unauthorized" },
  { name: "wrong token (write)", method: "POST", path: "/v3/configs/config/secrets", opts: { ...setBody({ SHARED: "hacked" }), headers: { authorization: `Bearer ${"x".repeat(40)}` } }, status: 401, code: "unauthorized" },
  { name: "not a bearer token", method: "GET", path: "/v3/projects", opts: { headers: { authorization: "Basic YWRtaW46YWRtaW4=" } }, status: 401, code: "unauthorized" },
  { name: "revoked token", who: "revoked", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ SHARED: "hacked" }), status: 401, code: "unauthorized" },
  { name: "a read token that writes", who: "read", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ SHARED: "hacked" }), status: 403, code: "forbidden" },
  { name: "a read token that deletes (null)", who: "read", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ SHARED: null }), status: 403, code: "forbidden" },
  { name: "a read token that deletes (DELETE)", who: "read", method: "DELETE", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "SHARED" } }, status: 403, code: "forbidden" },
  { name: "a service token on another config (read)", who: "other", method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: DEV }, status: 403, code: "forbidden" },
  { name: "a service token on another config (write)", who: "other", method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ SHARED: "hacked" }), status: 403, code: "forbidden" },
  { name: "a service token on another project", who: "readwrite", method: "GET", path: "/v3/configs/config/secrets", opts: { query: { project: "billing", config: "staging" } }, status: 403, code: "forbidden" },
  { name: "a service token creates a token", who: "readwrite", method: "POST", path: "/v3/tokens", opts: { body: { ...DEV, access: "read/write" } }, status: 403, code: "forbidden" },
  { name: "a service token creates a config", who: "readwrite", method: "POST", path: "/v3/configs", opts: { body: { project: P, name: "sneaky" } }, status: 403, code: "forbidden" },
];

describe("errors: the right 4xx, {error, message}, nothing changed", () => {
  it.each(errorCases)("$name → $status", async (c) => {
    const before = await snapshot();
    const res = await call(c.method, c.path, { ...c.opts, token: c.opts?.headers?.authorization ? undefined : tokenOf(c.who ?? "admin") });
    expectErrorBody(res, c.status, c.code);
    expect(await snapshot()).toEqual(before);
  });

  it("errors name what was wrong", async () => {
    const msg = async (path: string, opts: ApiOptions, method = "POST") => (await call(method, path, { token: admin, ...opts })).json.message as string;
    expect(await msg("/v3/configs/config/secrets", setBody({ lower: "1" }))).toMatch(/lower.*\^\[A-Z_\]\[A-Z0-9_\]\*\$/);
    const long = await msg("/v3/configs/config/secrets", setBody({ ["B".repeat(257)]: "1" }));
    expect(long).toMatch(/256/);
    expect(long.length).toBeLessThan(200); // quotes the name shortened, once
    expect(await msg("/v3/configs/config/secrets", jsonRaw('{"project":"app","config":"dev","secrets":{"__proto__":"x"}}'))).toMatch(/'__proto__': secret names must match/);
    expect(await msg("/v3/configs/config/secrets", setBody({ TOO_BIG: tooBig }))).toMatch(/TOO_BIG.*64 KiB/);
    expect(await msg("/v3/configs/config/secrets", setBody({ A: "1" }, { project: P, config: "nope" }))).toMatch(/nope/);
    expect(await msg("/v3/configs/config/secrets", jsonRaw("{"))).toMatch(/JSON/);
    expect(await msg("/v3/configs/config/secrets", { token: tok.read, ...setBody({ A: "1" }) })).toMatch(/read-only/);
    expect(await msg("/v3/configs/config/secrets", { token: tok.revoked, ...setBody({ A: "1" }) })).toMatch(/revoked/);
    expect(await msg("/v3/projects", { token: undefined }, "GET")).toMatch(/token/);
  });
});

// ---------------------------------------------------------------------------------------------
// The authorization matrix: every principal × every route.

interface RouteSpec {
  route: string;
  /** A valid request (setting up what it needs with the admin token first). */
  request: () => Promise<{ method: string; path: string; opts?: Omit<ApiOptions, "token"> }>;
  expect: Record<Who, number>;
  /** After a 200, check the effect took place. */
  verify?: (res: ApiResponse) => Promise<void>;
}
const ADMIN_ONLY: Record<Who, number> = { admin: 200, read: 403, readwrite: 403, other: 403, none: 401, revoked: 401, garbage: 401 };
const CONFIG_READ: Record<Who, number> = { admin: 200, read: 200, readwrite: 200, other: 403, none: 401, revoked: 401, garbage: 401 };
const CONFIG_WRITE: Record<Who, number> = { admin: 200, read: 403, readwrite: 200, other: 403, none: 401, revoked: 401, garbage: 401 };
const PUBLIC: Record<Who, number> = { admin: 200, read: 200, readwrite: 200, other: 200, none: 200, revoked: 200, garbage: 200 };

let seq = 0;
const routes: RouteSpec[] = [
  {
    route: "POST /v3/projects",
    request: async () => ({ method: "POST", path: "/v3/projects", opts: { body: { name: `matrix-${++seq}` } } }),
    expect: ADMIN_ONLY,
    verify: async (res) => expect((await adminCall("GET", "/v3/projects")).projects.map((p: { name: string }) => p.name)).toContain(res.json.project.name),
  },
  { route: "GET /v3/projects", request: async () => ({ method: "GET", path: "/v3/projects" }), expect: ADMIN_ONLY },
  {
    route: "POST /v3/configs",
    request: async () => ({ method: "POST", path: "/v3/configs", opts: { body: { project: P, name: `matrix-${++seq}` } } }),
    expect: ADMIN_ONLY,
  },
  { route: "GET /v3/configs", request: async () => ({ method: "GET", path: "/v3/configs", opts: { query: { project: P } } }), expect: ADMIN_ONLY },
  {
    route: "GET /v3/configs/config/secrets/download",
    request: async () => ({ method: "GET", path: "/v3/configs/config/secrets/download", opts: { query: { ...DEV, format: "env" } } }),
    expect: CONFIG_READ,
    verify: async (res) => expect(parseEnvFormat(res.text).SHARED).toBe("dev-value"),
  },
  {
    route: "GET /v3/configs/config/secrets",
    request: async () => ({ method: "GET", path: "/v3/configs/config/secrets", opts: { query: DEV } }),
    expect: CONFIG_READ,
    verify: async (res) => expect(res.json.secrets.SHARED.raw).toBe("dev-value"),
  },
  {
    route: "POST /v3/configs/config/secrets",
    request: async () => ({ method: "POST", path: "/v3/configs/config/secrets", opts: setBody({ MATRIX_SET: `v${++seq}` }) }),
    expect: CONFIG_WRITE,
    verify: async () => expect((await download(DEV)).MATRIX_SET).toBe(`v${seq}`),
  },
  {
    route: "GET /v3/configs/config/secret",
    request: async () => ({ method: "GET", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "SHARED" } } }),
    expect: CONFIG_READ,
    verify: async (res) => expect(res.json.value.raw).toBe("dev-value"),
  },
  {
    route: "DELETE /v3/configs/config/secret",
    request: async () => {
      await setSecrets(DEV, { MATRIX_DEL: "to delete" });
      return { method: "DELETE", path: "/v3/configs/config/secret", opts: { query: { ...DEV, name: "MATRIX_DEL" } } };
    },
    expect: CONFIG_WRITE,
    verify: async (res) => {
      expect(res.json).toEqual({ deleted: true });
      expect((await download(DEV)).MATRIX_DEL).toBeUndefined();
    },
  },
  {
    route: "GET /v3/configs/config/secret/versions",
    request: async () => ({ method: "GET", path: "/v3/configs/config/secret/versions", opts: { query: { ...DEV, name: "SHARED" } } }),
    expect: CONFIG_READ,
    verify: async (res) => expect(res.json.versions[0]).toMatchObject({ version: 1, deleted: false }),
  },
  {
    route: "POST /v3/tokens",
    request: async () => ({ method: "POST", path: "/v3/tokens", opts: { body: { ...DEV, access: "read", name: "matrix" } } }),
    expect: ADMIN_ONLY,
    verify: async (res) => expect(res.json.token).toMatch(/^rtr_svc_/),
  },
  { route: "GET /v3/tokens", request: async () => ({ method: "GET", path: "/v3/tokens" }), expect: ADMIN_ONLY },
  {
    route: "DELETE /v3/tokens/{id}",
    request: async () => {
      const { id } = await createToken(DEV, "read", "matrix victim");
      return { method: "DELETE", path: `/v3/tokens/${id}` };
    },
    expect: ADMIN_ONLY,
  },
  { route: "GET /v3/activity", request: async () => ({ method: "GET", path: "/v3/activity", opts: { query: { limit: 3 } } }), expect: ADMIN_ONLY },
  { route: "GET /v3/openapi.json", request: async () => ({ method: "GET", path: "/v3/openapi.json" }), expect: PUBLIC },
  { route: "GET /health", request: async () => ({ method: "GET", path: "/health" }), expect: PUBLIC },
];
const WHO: Who[] = ["admin", "read", "readwrite", "other", "none", "revoked", "garbage"];
const matrix = routes.flatMap((r) => WHO.map((who) => ({ route: r.route, who, status: r.expect[who], spec: r })));

describe("authorization matrix", () => {
  it("covers every route of the foundation, and /health and the OpenAPI document", () => {
    expect(routes.map((r) => r.route).sort()).toEqual([...FOUNDATION_ROUTES, "GET /v3/openapi.json", "GET /health"].sort());
  });

  it.each(matrix)("$route as $who → $status", async ({ spec, who, status }) => {
    const req = await spec.request();
    const before = status === 200 ? undefined : await snapshot();
    const res = await call(req.method, req.path, { ...req.opts, token: tokenOf(who) });
    if (status === 200) {
      expect(res.status, res.text).toBe(200);
      await spec.verify?.(res);
    } else {
      expectErrorBody(res, status, status === 401 ? "unauthorized" : "forbidden");
      expect(await snapshot()).toEqual(before);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("token values never leak", () => {
  it("no response but a token's own create response contains a token value", () => {
    expect(tokenValues.size).toBeGreaterThanOrEqual(10);
    expect(responses.length).toBeGreaterThan(200);
    for (const r of responses) {
      for (const t of tokenValues) {
        if (t === r.createdToken) continue;
        expect(r.text.includes(t), `${r.what} (HTTP ${r.status}) contains a token value`).toBe(false);
      }
    }
    expect(responses.filter((r) => r.createdToken).every((r) => r.text.includes(r.createdToken!))).toBe(true);
  });

  it("no response was a 5xx", () => {
    expect(responses.filter((r) => r.status >= 500).map((r) => `${r.what}: ${r.status}`)).toEqual([]);
  });

  it("no stored item contains a token value, and no file in the data dir does (but admin-token)", async () => {
    const items = JSON.stringify(await scanRaw(rotor.embedded.deps.table.client, rotor.embedded.deps.table.name));
    for (const t of tokenValues) expect(items.includes(t)).toBe(false);
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else if (p !== join(rotor.dataDir, "admin-token")) files.push(p);
      }
    };
    walk(rotor.dataDir);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const content = readFileSync(f);
      for (const t of tokenValues) expect(content.includes(t), `${f} contains a token value`).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The authorization matrix of the routes added after the foundation (rotation, dynamic secrets,
// leases, executions, webhooks), plus activity and tokens again with a garbage token. They need
// a real database behind them (a real lease, a real flip), so they run against their own
// Rotor: the dynamic-secret env (real PostgreSQL, embedded Rotor).
//
// Allowed principals may still get a 4xx (the named secret doesn't exist, the spec's database
// is unreachable): what matters is that it is not 401/403 and never a 500. Refused principals
// get exactly 401 (none, garbage, revoked) or 403 (no scope) and change nothing.

type LaterWho = Who;
const LATER_WHO: LaterWho[] = ["admin", "read", "readwrite", "other", "none", "revoked", "garbage"];
const LATER_ROUTES = [
  "POST /v3/configs/config/rotated_secrets",
  "GET /v3/configs/config/rotated_secrets",
  "DELETE /v3/configs/config/rotated_secret",
  "POST /v3/configs/config/rotated_secrets/rotate",
  "POST /v3/configs/config/rotated_secrets/resume",
  "POST /v3/configs/config/dynamic_secrets",
  "GET /v3/configs/config/dynamic_secrets",
  "DELETE /v3/configs/config/dynamic_secret",
  "GET /v3/leases",
  "POST /v3/leases/{id}/renew",
  "POST /v3/leases/{id}/revoke",
  "POST /v3/leases/revoke",
  "GET /v3/executions",
  "GET /v3/executions/{id}",
  "GET /v3/executions/{id}/history",
  "POST /v3/webhooks",
  "GET /v3/webhooks",
  "DELETE /v3/webhooks/{id}",
  "GET /v3/webhooks/{id}/deliveries",
];

describe("authorization matrix: routes after the foundation (own Rotor with a real PostgreSQL)", () => {
  let env: DynamicEnv;
  const ltok: Record<Exclude<LaterWho, "admin" | "none">, string> = { read: "", readwrite: "", other: "", revoked: "", garbage: GARBAGE_TOKEN };
  const ids = { lease: "", lease2: "", execution: "", webhook: "" };
  const ltokenOf = (who: LaterWho) => (who === "admin" ? env.token : who === "none" ? undefined : ltok[who]);
  const lcall = (method: string, path: string, opts: ApiOptions = {}) => apiRequest(env.rotor.url, method, path, opts);
  const ok = async (res: Promise<ApiResponse>, status = 200) => {
    const r = await res;
    expect(r.status, r.text).toBe(status);
    return r.json;
  };

  beforeAll(async () => {
    env = await startDynamicEnv(engines[0]);
    await ok(env.api("POST", "/v3/configs", { body: { project: env.project, name: "other" } }));
    const mk = (config: string, access: string) => ok(env.api("POST", "/v3/tokens", { body: { project: env.project, config, access } }));
    ltok.read = (await mk(env.config, "read")).token;
    ltok.readwrite = (await mk(env.config, "read/write")).token;
    ltok.other = (await mk("other", "read/write")).token;
    const revoked = await mk(env.config, "read/write");
    ltok.revoked = revoked.token;
    await ok(env.api("DELETE", `/v3/tokens/${revoked.id}`));
    await env.createDynamic("LEASED");
    ids.lease = (await env.lease("LEASED", 600)).leaseId;
    ids.lease2 = (await env.lease("LEASED", 600)).leaseId;
    await env.createRotated("ROT");
    const flip = await env.flip("ROT");
    expect(flip.status).toBe("SUCCEEDED");
    ids.execution = flip.executionId;
    ids.webhook = (await ok(env.api("POST", "/v3/webhooks", { body: { project: env.project, url: "http://127.0.0.1:1/hook" } }))).webhook.id;
  }, 120_000);
  afterAll(async () => {
    await env?.stop();
  });

  type Allowed = readonly LaterWho[];
  const ADMIN: Allowed = ["admin"];
  const READ: Allowed = ["admin", "read", "readwrite"];
  const WRITE: Allowed = ["admin", "readwrite"];
  interface LaterSpec {
    route: string;
    /** Distinguishes two specs of one route (e.g. a config-scoped and an admin-only execution). */
    label?: string;
    request: () => { method: string; path: string; opts?: Omit<ApiOptions, "token"> };
    allowed: Allowed;
    /** What an allowed principal may get once past authorization. */
    outcomes: number[];
  }
  const cfg = () => ({ project: env.project, config: env.config });
  const rotatedSpec = () => env.createBody("MX_ROT", [{ username: "mx_a", password: "MxA-not-a-real-pw-1" }, { username: "mx_b", password: "MxB-not-a-real-pw-1" }], { port: 1 });
  const later: LaterSpec[] = [
    { route: "POST /v3/configs/config/rotated_secrets", request: () => ({ method: "POST", path: "/v3/configs/config/rotated_secrets", opts: { body: rotatedSpec() } }), allowed: WRITE, outcomes: [422] },
    { route: "GET /v3/configs/config/rotated_secrets", request: () => ({ method: "GET", path: "/v3/configs/config/rotated_secrets", opts: { query: cfg() } }), allowed: READ, outcomes: [200] },
    { route: "DELETE /v3/configs/config/rotated_secret", request: () => ({ method: "DELETE", path: "/v3/configs/config/rotated_secret", opts: { query: { ...cfg(), name: "NOPE" } } }), allowed: WRITE, outcomes: [404] },
    { route: "POST /v3/configs/config/rotated_secrets/rotate", request: () => ({ method: "POST", path: "/v3/configs/config/rotated_secrets/rotate", opts: { body: { ...cfg(), name: "NOPE" } } }), allowed: WRITE, outcomes: [404] },
    { route: "POST /v3/configs/config/rotated_secrets/resume", request: () => ({ method: "POST", path: "/v3/configs/config/rotated_secrets/resume", opts: { body: { ...cfg(), name: "NOPE" } } }), allowed: WRITE, outcomes: [404] },
    {
      route: "POST /v3/configs/config/dynamic_secrets",
      request: () => ({ method: "POST", path: "/v3/configs/config/dynamic_secrets", opts: { body: env.dynamicBody("MX_DYN", { connection: { host: env.db.host, port: 1, database: env.db.database } }) } }),
      allowed: WRITE,
      outcomes: [422],
    },
    { route: "GET /v3/configs/config/dynamic_secrets", request: () => ({ method: "GET", path: "/v3/configs/config/dynamic_secrets", opts: { query: cfg() } }), allowed: READ, outcomes: [200] },
    { route: "DELETE /v3/configs/config/dynamic_secret", request: () => ({ method: "DELETE", path: "/v3/configs/config/dynamic_secret", opts: { query: { ...cfg(), name: "NOPE" } } }), allowed: WRITE, outcomes: [404] },
    { route: "GET /v3/leases", request: () => ({ method: "GET", path: "/v3/leases", opts: { query: cfg() } }), allowed: READ, outcomes: [200] },
    // A real lease of the config: the route loads it, then authorizes against its config.
    { route: "POST /v3/leases/{id}/renew", request: () => ({ method: "POST", path: `/v3/leases/${ids.lease}/renew`, opts: { body: { ttlSec: 300 } } }), allowed: WRITE, outcomes: [200] },
    // The admin revokes it first; the read/write token then finds it already revoked.
    { route: "POST /v3/leases/{id}/revoke", request: () => ({ method: "POST", path: `/v3/leases/${ids.lease2}/revoke`, opts: { body: {} } }), allowed: WRITE, outcomes: [200, 409] },
    { route: "POST /v3/leases/revoke", request: () => ({ method: "POST", path: "/v3/leases/revoke", opts: { body: { ...cfg(), dynamic: "LEASED" } } }), allowed: WRITE, outcomes: [200] },
    { route: "GET /v3/executions", label: "all", request: () => ({ method: "GET", path: "/v3/executions" }), allowed: ADMIN, outcomes: [200] },
    { route: "GET /v3/executions", label: "of a rotated secret", request: () => ({ method: "GET", path: "/v3/executions", opts: { query: { ...cfg(), secret: "ROT" } } }), allowed: READ, outcomes: [200] },
    { route: "GET /v3/executions/{id}", label: "a flip", request: () => ({ method: "GET", path: `/v3/executions/${ids.execution}` }), allowed: READ, outcomes: [200] },
    { route: "GET /v3/executions/{id}", label: "a lease's workflow", request: () => ({ method: "GET", path: `/v3/executions/${ids.lease}` }), allowed: ADMIN, outcomes: [200] },
    { route: "GET /v3/executions/{id}/history", label: "a flip", request: () => ({ method: "GET", path: `/v3/executions/${ids.execution}/history` }), allowed: READ, outcomes: [200] },
    { route: "GET /v3/executions/{id}/history", label: "a lease's workflow", request: () => ({ method: "GET", path: `/v3/executions/${ids.lease}/history` }), allowed: ADMIN, outcomes: [200] },
    { route: "POST /v3/webhooks", request: () => ({ method: "POST", path: "/v3/webhooks", opts: { body: { project: env.project, url: "http://127.0.0.1:1/other" } } }), allowed: ADMIN, outcomes: [200] },
    { route: "GET /v3/webhooks", request: () => ({ method: "GET", path: "/v3/webhooks" }), allowed: ADMIN, outcomes: [200] },
    // Deliveries before the removal: the admin (first in the row) removes the webhook.
    { route: "GET /v3/webhooks/{id}/deliveries", request: () => ({ method: "GET", path: `/v3/webhooks/${ids.webhook}/deliveries` }), allowed: ADMIN, outcomes: [200] },
    { route: "DELETE /v3/webhooks/{id}", request: () => ({ method: "DELETE", path: `/v3/webhooks/${ids.webhook}` }), allowed: ADMIN, outcomes: [200] },
    { route: "GET /v3/activity", request: () => ({ method: "GET", path: "/v3/activity", opts: { query: { limit: 3 } } }), allowed: ADMIN, outcomes: [200] },
    { route: "POST /v3/tokens", request: () => ({ method: "POST", path: "/v3/tokens", opts: { body: { ...cfg(), access: "read" } } }), allowed: ADMIN, outcomes: [200] },
    { route: "GET /v3/tokens", request: () => ({ method: "GET", path: "/v3/tokens" }), allowed: ADMIN, outcomes: [200] },
    { route: "DELETE /v3/tokens/{id}", request: () => ({ method: "DELETE", path: "/v3/tokens/tok_doesnotexist" }), allowed: ADMIN, outcomes: [404] },
  ];
  const laterMatrix = later.flatMap((spec) =>
    LATER_WHO.map((who) => {
      const status = spec.allowed.includes(who) ? "allowed" : who === "none" || who === "garbage" || who === "revoked" ? "401" : "403";
      return { name: `${spec.route}${spec.label ? ` (${spec.label})` : ""}`, who, status, spec };
    }),
  );

  /** What a refused write could have changed in the config. */
  const state = async () => {
    const [rotated, dynamic, leases, webhooks, tokens, activity] = await Promise.all([
      ok(env.api("GET", "/v3/configs/config/rotated_secrets", { query: cfg() })),
      ok(env.api("GET", "/v3/configs/config/dynamic_secrets", { query: cfg() })),
      ok(env.api("GET", "/v3/leases", { query: { ...cfg(), include_revoked: "true" } })),
      ok(env.api("GET", "/v3/webhooks")),
      ok(env.api("GET", "/v3/tokens")),
      ok(env.api("GET", "/v3/activity", { query: { limit: 5 } })).then((r) => r.activity.map((e: { id: string }) => e.id)),
    ]);
    return { rotated, dynamic, leases, webhooks, tokens, activity };
  };

  it("covers every route the server has", async () => {
    const doc = await ok(lcall("GET", "/v3/openapi.json"));
    const operations = Object.entries<Record<string, unknown>>(doc.paths).flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`));
    const covered = new Set([...FOUNDATION_ROUTES, ...LATER_ROUTES, "GET /v3/openapi.json", "GET /health"]);
    expect(operations.filter((o) => !covered.has(o))).toEqual([]);
    expect(new Set(later.map((s) => s.route))).toEqual(new Set([...LATER_ROUTES, "GET /v3/activity", "POST /v3/tokens", "GET /v3/tokens", "DELETE /v3/tokens/{id}"]));
  });

  it.each(laterMatrix)("$name as $who → $status", async ({ spec, who, status }) => {
    const req = spec.request();
    const before = status !== "allowed" && req.method !== "GET" ? await state() : undefined;
    const res = await lcall(req.method, req.path, { ...req.opts, token: ltokenOf(who) });
    if (status === "allowed") {
      expect(spec.outcomes, `${res.status} ${res.text}`).toContain(res.status);
      if (res.status >= 400) expect(res.json, res.text).toEqual({ error: expect.any(String), message: expect.any(String) });
    } else {
      expect(res.status, res.text).toBe(Number(status));
      expect(res.json, res.text).toEqual({ error: status === "401" ? "unauthorized" : "forbidden", message: expect.any(String) });
      if (before) expect(await state()).toEqual(before);
    }
  });
});
