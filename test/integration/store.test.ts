/**
 * The store against real DynamoDB engines: dynalite and AWS's DynamoDB Local.
 * Each engine starts once per file; every test gets its own fresh table (makeDeps).
 */
import { createHash, randomBytes } from "node:crypto";
import { GetItemCommand, UpdateItemCommand, PutItemCommand, type AttributeValue } from "@aws-sdk/client-dynamodb";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { listActivity } from "../../core/activity.ts";
import { authenticate, createToken, listTokens, revokeToken } from "../../core/auth/tokens.ts";
import { Envelope } from "../../core/crypto/envelope.ts";
import { FileKeyWrapper } from "../../core/adapters/local/file-key-wrapper.ts";
import { RotorError } from "../../core/errors.ts";
import { createConfig, createProject, getProject, listConfigs, listProjects } from "../../core/projects.ts";
import { configPk, getSecret, listSecrets, listVersions, setSecrets } from "../../core/secrets/static.ts";
import { ENGINES, makeDeps, scanRaw, type RunningEngine, type TestDeps } from "../support/dynamo.ts";

const ACTOR = "admin:tok_test";

async function expectRotorError(p: Promise<unknown>, code: string, status?: number) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a RotorError '${code}'`).toBeInstanceOf(RotorError);
  expect((err as RotorError).code).toBe(code);
  if (status !== undefined) expect((err as RotorError).status).toBe(status);
  return err as RotorError;
}

/** Ways a value could leak into an item: itself, base64 (every byte alignment), base64url, hex. */
function leakForms(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  const forms = new Set<string>([value, bytes.toString("hex"), JSON.stringify(value).slice(1, -1)]);
  for (let shift = 0; shift < 3; shift++) {
    // The base64 of the value embedded at any offset contains the "core" of one of these three.
    for (const enc of ["base64", "base64url"] as const) {
      const b64 = bytes.subarray(shift).toString(enc).replace(/=+$/, "");
      forms.add(b64.slice(0, Math.floor((bytes.length - shift) / 3) * 4));
    }
  }
  return [...forms].filter((f) => f.length >= 8);
}

async function rawDump(deps: TestDeps): Promise<{ items: Record<string, AttributeValue>[]; text: string }> {
  const items = await scanRaw(deps.client, deps.tableName);
  return { items, text: JSON.stringify(items) };
}

async function rawGet(deps: TestDeps, pk: string, sk: string) {
  const out = await deps.client.send(new GetItemCommand({ TableName: deps.tableName, Key: { pk: { S: pk }, sk: { S: sk } }, ConsistentRead: true }));
  return out.Item;
}

async function projectWithConfigs(deps: TestDeps, project: string, configs: string[]) {
  await createProject(deps, ACTOR, { name: project });
  for (const c of configs) await createConfig(deps, ACTOR, { project, name: c });
}

// Start every engine at once, so DynamoDB Local's JVM boots while the dynalite block runs.
const starting = new Map<string, Promise<RunningEngine>>();
beforeAll(() => {
  for (const e of ENGINES) {
    const p = e.start();
    p.catch(() => {}); // reported by the block that awaits it
    starting.set(e.name, p);
  }
});
afterAll(async () => {
  await Promise.all([...starting.values()].map((p) => p.then((db) => db.stop(), () => {})));
});

describe.each(ENGINES)("store on $name", (engine) => {
  let db: RunningEngine;
  let deps: TestDeps;

  beforeAll(async () => {
    db = await starting.get(engine.name)!;
    console.info(`${engine.name} answered after ${db.startupMs} ms`);
  });
  beforeEach(async () => {
    deps = await makeDeps(db.endpoint, { clock: true });
  });
  afterEach(() => {
    deps?.close();
  });

  describe("projects", () => {
    it("creates, reads and lists projects", async () => {
      const p = await createProject(deps, ACTOR, { name: "billing", notifyEmail: "ops@example.com" });
      expect(p).toEqual({ name: "billing", createdAt: "2030-01-01T00:00:00.000Z", notifyEmail: "ops@example.com" });
      await createProject(deps, ACTOR, { name: "api" });
      expect(await getProject(deps, "billing")).toEqual(p);
      expect((await listProjects(deps)).map((x) => x.name)).toEqual(["api", "billing"]);
    });

    it("refuses a duplicate project with a conflict and keeps the original", async () => {
      await createProject(deps, ACTOR, { name: "billing", notifyEmail: "first@example.com" });
      deps.clock!.advance(1000);
      await expectRotorError(createProject(deps, ACTOR, { name: "billing", notifyEmail: "second@example.com" }), "conflict", 409);
      expect(await getProject(deps, "billing")).toMatchObject({ notifyEmail: "first@example.com", createdAt: "2030-01-01T00:00:00.000Z" });
      expect(await listProjects(deps)).toHaveLength(1);
    });

    it("answers not_found for an unknown project", async () => {
      await expectRotorError(getProject(deps, "ghost"), "not_found", 404);
    });
  });

  describe("configs", () => {
    it("creates and lists configs of a project", async () => {
      await projectWithConfigs(deps, "billing", ["stg", "dev", "prd"]);
      const configs = await listConfigs(deps, "billing");
      expect(configs.map((c) => c.name)).toEqual(["dev", "prd", "stg"]);
      expect(configs[0]).toEqual({ project: "billing", name: "dev", createdAt: "2030-01-01T00:00:00.000Z" });
    });

    it("refuses a config of an unknown project with not_found", async () => {
      await expectRotorError(createConfig(deps, ACTOR, { project: "ghost", name: "dev" }), "not_found", 404);
      await expectRotorError(listConfigs(deps, "ghost"), "not_found", 404);
      expect((await rawDump(deps)).items).toHaveLength(0);
    });

    it("refuses a duplicate config, but the same name in another project is fine", async () => {
      await projectWithConfigs(deps, "billing", ["dev"]);
      await expectRotorError(createConfig(deps, ACTOR, { project: "billing", name: "dev" }), "conflict", 409);
      await createProject(deps, ACTOR, { name: "api" });
      await createConfig(deps, ACTOR, { project: "api", name: "dev" });
      expect((await listConfigs(deps, "billing")).map((c) => c.name)).toEqual(["dev"]);
      expect((await listConfigs(deps, "api")).map((c) => c.name)).toEqual(["dev"]);
    });
  });

  describe("secrets", () => {
    beforeEach(async () => {
      await projectWithConfigs(deps, "billing", ["dev"]);
    });

    it("sets several secrets, then gets and lists them", async () => {
      const { changed } = await setSecrets(deps, ACTOR, "billing", "dev", { DB_URL: "postgres://x", API_KEY: "k-1", EMPTY: "" });
      expect(changed.map((c) => [c.name, c.version])).toEqual([["DB_URL", 1], ["API_KEY", 1], ["EMPTY", 1]]);
      expect(await getSecret(deps, "billing", "dev", "API_KEY")).toEqual({
        name: "API_KEY",
        version: 1,
        updatedAt: "2030-01-01T00:00:00.000Z",
        value: "k-1",
      });
      expect((await getSecret(deps, "billing", "dev", "EMPTY")).value).toBe("");
      const listed = await listSecrets(deps, "billing", "dev");
      expect(listed.map((s) => [s.name, s.version, s.value])).toEqual([
        ["API_KEY", 1, "k-1"],
        ["DB_URL", 1, "postgres://x"],
        ["EMPTY", 1, ""],
      ]);
    });

    it("an update creates version 2 and keeps version 1 in history", async () => {
      await setSecrets(deps, ACTOR, "billing", "dev", { API_KEY: "old" });
      deps.clock!.advance(60_000);
      const { changed } = await setSecrets(deps, "service:tok_2", "billing", "dev", { API_KEY: "new" });
      expect(changed).toEqual([{ name: "API_KEY", version: 2, updatedAt: "2030-01-01T00:01:00.000Z" }]);
      expect(await getSecret(deps, "billing", "dev", "API_KEY")).toMatchObject({ version: 2, value: "new" });
      expect(await listVersions(deps, "billing", "dev", "API_KEY")).toEqual([
        { version: 1, deleted: false, updatedAt: "2030-01-01T00:00:00.000Z", updatedBy: ACTOR },
        { version: 2, deleted: false, updatedAt: "2030-01-01T00:01:00.000Z", updatedBy: "service:tok_2" },
      ]);
    });

    it("delete via null writes a tombstone version; the secret is no longer listed; the chain continues", async () => {
      await setSecrets(deps, ACTOR, "billing", "dev", { API_KEY: "a", KEEP: "k" });
      await setSecrets(deps, ACTOR, "billing", "dev", { API_KEY: "b" });
      const { changed } = await setSecrets(deps, ACTOR, "billing", "dev", { API_KEY: null });
      expect(changed.map((c) => [c.name, c.version])).toEqual([["API_KEY", 3]]);
      await expectRotorError(getSecret(deps, "billing", "dev", "API_KEY"), "not_found", 404);
      expect((await listSecrets(deps, "billing", "dev")).map((s) => s.name)).toEqual(["KEEP"]);
      expect((await listVersions(deps, "billing", "dev", "API_KEY")).map((v) => [v.version, v.deleted])).toEqual([
        [1, false],
        [2, false],
        [3, true],
      ]);
      // The tombstone holds no ciphertext.
      const state = await rawGet(deps, configPk("billing", "dev"), "SECRET#API_KEY");
      expect(state?.sealed).toBeUndefined();
      expect(state?.deleted).toEqual({ BOOL: true });
      // Setting it again continues the version chain instead of restarting it.
      const again = await setSecrets(deps, ACTOR, "billing", "dev", { API_KEY: "c" });
      expect(again.changed[0].version).toBe(4);
      expect(await getSecret(deps, "billing", "dev", "API_KEY")).toMatchObject({ version: 4, value: "c" });
    });

    it("deleting a missing or already-deleted secret changes nothing", async () => {
      await setSecrets(deps, ACTOR, "billing", "dev", { GONE: "x" });
      await setSecrets(deps, ACTOR, "billing", "dev", { GONE: null });
      const before = await rawDump(deps);
      const activityBefore = deps.published.length;
      deps.clock!.advance(1000);
      expect(await setSecrets(deps, ACTOR, "billing", "dev", { NEVER_SET: null, GONE: null })).toEqual({ changed: [] });
      const after = await rawDump(deps);
      expect(after.items).toHaveLength(before.items.length);
      expect(after.text).not.toContain("NEVER_SET");
      expect(await listVersions(deps, "billing", "dev", "GONE")).toHaveLength(2);
      expect(deps.published).toHaveLength(activityBefore);
    });

    it("answers not_found for a missing secret or an unknown config", async () => {
      await expectRotorError(getSecret(deps, "billing", "dev", "NOPE"), "not_found", 404);
      await expectRotorError(setSecrets(deps, ACTOR, "billing", "ghost", { A: "1" }), "not_found", 404);
      await expectRotorError(setSecrets(deps, ACTOR, "ghost", "dev", { A: "1" }), "not_found", 404);
      await expectRotorError(listSecrets(deps, "billing", "ghost"), "not_found", 404);
      await expectRotorError(listVersions(deps, "billing", "ghost", "A"), "not_found", 404);
      expect(await listVersions(deps, "billing", "dev", "NOPE")).toEqual([]);
    });

    it("listVersions of a name does not include names that extend it", async () => {
      await setSecrets(deps, ACTOR, "billing", "dev", { DB: "1", DB_URL: "u", D: "d" });
      await setSecrets(deps, ACTOR, "billing", "dev", { DB_URL: "u2" });
      expect((await listVersions(deps, "billing", "dev", "DB")).map((v) => v.version)).toEqual([1]);
      expect((await listVersions(deps, "billing", "dev", "DB_URL")).map((v) => v.version)).toEqual([1, 2]);
      expect((await listVersions(deps, "billing", "dev", "D")).map((v) => v.version)).toEqual([1]);
    });
  });

  describe("concurrency", () => {
    beforeEach(async () => {
      await projectWithConfigs(deps, "billing", ["dev"]);
    });

    it("parallel sets of one secret all land as distinct consecutive versions", async () => {
      const n = 5;
      const values = Array.from({ length: n }, (_, i) => `value-${i}`);
      const results = await Promise.all(values.map((v) => setSecrets(deps, ACTOR, "billing", "dev", { RACE: v })));
      const versions = results.map((r) => r.changed[0].version);
      expect([...versions].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5]);
      expect((await listVersions(deps, "billing", "dev", "RACE")).map((v) => v.version)).toEqual([1, 2, 3, 4, 5]);
      // The current value is the one written as the last version.
      const last = values[versions.indexOf(n)];
      expect(await getSecret(deps, "billing", "dev", "RACE")).toMatchObject({ version: n, value: last });
    });

    it("parallel sets of different secrets do not interfere", async () => {
      const names = Array.from({ length: 8 }, (_, i) => `S_${i}`);
      await Promise.all(names.map((n) => setSecrets(deps, ACTOR, "billing", "dev", { [n]: `v-${n}` })));
      const listed = await listSecrets(deps, "billing", "dev");
      expect(listed.map((s) => [s.name, s.version, s.value])).toEqual(names.map((n) => [n, 1, `v-${n}`]));
    });
  });

  describe("scoping", () => {
    it("secrets of one config are not visible in another config or another project", async () => {
      await projectWithConfigs(deps, "billing", ["dev", "prd"]);
      await projectWithConfigs(deps, "api", ["dev"]);
      await setSecrets(deps, ACTOR, "billing", "dev", { TOKEN: "billing-dev" });

      expect(await listSecrets(deps, "billing", "prd")).toEqual([]);
      expect(await listSecrets(deps, "api", "dev")).toEqual([]);
      await expectRotorError(getSecret(deps, "billing", "prd", "TOKEN"), "not_found");
      await expectRotorError(getSecret(deps, "api", "dev", "TOKEN"), "not_found");
      expect(await listVersions(deps, "api", "dev", "TOKEN")).toEqual([]);

      // Same name elsewhere: independent values and independent version chains.
      await setSecrets(deps, ACTOR, "api", "dev", { TOKEN: "api-dev" });
      await setSecrets(deps, ACTOR, "api", "dev", { TOKEN: "api-dev-2" });
      expect(await getSecret(deps, "billing", "dev", "TOKEN")).toMatchObject({ version: 1, value: "billing-dev" });
      expect(await getSecret(deps, "api", "dev", "TOKEN")).toMatchObject({ version: 2, value: "api-dev-2" });
      // Deleting in one place leaves the other alone.
      await setSecrets(deps, ACTOR, "api", "dev", { TOKEN: null });
      expect(await getSecret(deps, "billing", "dev", "TOKEN")).toMatchObject({ value: "billing-dev" });
    });

    it("project and config names that concatenate alike stay apart", async () => {
      await projectWithConfigs(deps, "ab", ["c"]);
      await projectWithConfigs(deps, "a", ["bc", "b-c"]);
      await setSecrets(deps, ACTOR, "ab", "c", { X: "ab/c" });
      expect(await listSecrets(deps, "a", "bc")).toEqual([]);
      expect(await listSecrets(deps, "a", "b-c")).toEqual([]);
      expect((await listConfigs(deps, "a")).map((c) => c.name)).toEqual(["b-c", "bc"]);
      expect((await listConfigs(deps, "ab")).map((c) => c.name)).toEqual(["c"]);
    });
  });

  describe("encryption at rest", () => {
    it("no plaintext value (or its base64/hex) appears in any stored item", async () => {
      await projectWithConfigs(deps, "billing", ["dev", "prd"]);
      const canary = () => `canary-${randomBytes(12).toString("hex")}`;
      const values = {
        PLAIN: canary(),
        UNICODE: `pässwörd-✓-${canary()}`,
        MULTILINE: `-----BEGIN KEY-----\n${canary()}\n${canary()}\n-----END KEY-----`,
        JSONISH: JSON.stringify({ user: "svc", password: canary() }),
        LONG: canary().repeat(200),
      };
      const overwritten = canary();
      const deleted = canary();
      await setSecrets(deps, ACTOR, "billing", "dev", { ...values, OLD: overwritten, DEL: deleted });
      await setSecrets(deps, ACTOR, "billing", "prd", values);
      await setSecrets(deps, ACTOR, "billing", "dev", { OLD: canary(), DEL: null });

      const { items, text } = await rawDump(deps);
      expect(items.length).toBeGreaterThan(10);
      for (const value of [...Object.values(values), overwritten, deleted]) {
        for (const form of leakForms(value)) expect(text.includes(form), `leak of ${JSON.stringify(form.slice(0, 40))}`).toBe(false);
      }
      // Every secret item that holds a value holds it sealed, and the values still read back.
      const sealedItems = items.filter((i) => i.sealed);
      expect(sealedItems.length).toBeGreaterThan(0);
      for (const i of sealedItems) expect(Object.keys(i.sealed.M!).sort()).toEqual(["ct", "iv", "key", "tag", "v"]);
      expect((await getSecret(deps, "billing", "dev", "LONG")).value).toBe(values.LONG);
      expect((await listSecrets(deps, "billing", "prd")).find((s) => s.name === "UNICODE")?.value).toBe(values.UNICODE);
      // Events published carry no values either.
      const events = JSON.stringify(deps.published);
      for (const value of Object.values(values)) expect(events.includes(value)).toBe(false);
    });

    it("a sealed value moved to another secret, config, project or version does not decrypt", async () => {
      await projectWithConfigs(deps, "billing", ["dev", "prd"]);
      await projectWithConfigs(deps, "api", ["dev"]);
      await setSecrets(deps, ACTOR, "billing", "dev", { SOURCE: "the-source-value", OTHER: "other-value" });
      await setSecrets(deps, ACTOR, "billing", "prd", { SOURCE: "prd-value" });
      await setSecrets(deps, ACTOR, "api", "dev", { SOURCE: "api-value" });
      const source = await rawGet(deps, configPk("billing", "dev"), "SECRET#SOURCE");
      const sealed = source!.sealed;

      const plant = async (pk: string, sk: string) =>
        deps.client.send(
          new UpdateItemCommand({
            TableName: deps.tableName,
            Key: { pk: { S: pk }, sk: { S: sk } },
            UpdateExpression: "SET sealed = :s",
            ExpressionAttributeValues: { ":s": sealed },
          }),
        );
      const expectNoDecrypt = async (p: Promise<unknown>) => {
        const out = await p.then(
          (v) => ({ ok: true as const, v }),
          (e: unknown) => ({ ok: false as const, e }),
        );
        expect(out.ok, "a moved ciphertext must not open").toBe(false);
        expect(JSON.stringify(out)).not.toContain("the-source-value");
      };

      // Another secret of the same config (same version 1).
      await plant(configPk("billing", "dev"), "SECRET#OTHER");
      await expectNoDecrypt(getSecret(deps, "billing", "dev", "OTHER"));
      // Same name, another config.
      await plant(configPk("billing", "prd"), "SECRET#SOURCE");
      await expectNoDecrypt(getSecret(deps, "billing", "prd", "SOURCE"));
      // Same config name, another project.
      await plant(configPk("api", "dev"), "SECRET#SOURCE");
      await expectNoDecrypt(getSecret(deps, "api", "dev", "SOURCE"));
      // Same secret, a later version (a rollback to an old ciphertext).
      await setSecrets(deps, ACTOR, "billing", "dev", { SOURCE: "second-value" });
      await plant(configPk("billing", "dev"), "SECRET#SOURCE");
      await expectNoDecrypt(getSecret(deps, "billing", "dev", "SOURCE"));

      // A whole item copied (key attributes rewritten) fails the same way.
      const whole = { ...source!, pk: { S: configPk("billing", "prd") }, sk: { S: "SECRET#COPIED" }, name: { S: "COPIED" } };
      await deps.client.send(new PutItemCommand({ TableName: deps.tableName, Item: whole }));
      await expectNoDecrypt(getSecret(deps, "billing", "prd", "COPIED"));
    });

    it("another master key cannot open the values", async () => {
      await projectWithConfigs(deps, "billing", ["dev"]);
      await setSecrets(deps, ACTOR, "billing", "dev", { A: "value-a" });
      const stranger = { ...deps, envelope: new Envelope(FileKeyWrapper.fromKey(randomBytes(32))) };
      await expect(getSecret(stranger, "billing", "dev", "A")).rejects.toThrow();
      expect((await getSecret(deps, "billing", "dev", "A")).value).toBe("value-a");
    });
  });

  describe("tokens", () => {
    beforeEach(async () => {
      await projectWithConfigs(deps, "billing", ["dev"]);
    });

    it("stores only the SHA-256 hash of a token, and authenticates it", async () => {
      const admin = await createToken(deps, ACTOR, { kind: "admin" });
      const svc = await createToken(deps, ACTOR, { kind: "service", project: "billing", config: "dev", access: "read", name: "ci" });
      expect(admin.token).toMatch(/^rtr_admin_/);
      expect(svc.token).toMatch(/^rtr_svc_/);

      const { items, text } = await rawDump(deps);
      for (const t of [admin.token, svc.token]) {
        const secretPart = t.replace(/^rtr_(admin|svc)_/, "");
        for (const form of [...leakForms(t), ...leakForms(secretPart)]) expect(text.includes(form)).toBe(false);
        const hash = createHash("sha256").update(t, "utf8").digest("hex");
        expect(items.some((i) => i.pk?.S === `TOKEN#${hash}`)).toBe(true);
      }

      expect(await authenticate(deps, admin.token)).toEqual({
        tokenId: admin.id,
        kind: "admin",
        access: "read/write",
        name: "admin",
      });
      expect(await authenticate(deps, svc.token)).toEqual({
        tokenId: svc.id,
        kind: "service",
        project: "billing",
        config: "dev",
        access: "read",
        name: "ci",
      });
    });

    it("rejects missing, wrong and altered tokens as unauthorized", async () => {
      const { token } = await createToken(deps, ACTOR, { kind: "admin" });
      await expectRotorError(authenticate(deps, undefined), "unauthorized", 401);
      await expectRotorError(authenticate(deps, ""), "unauthorized", 401);
      await expectRotorError(authenticate(deps, `rtr_admin_${randomBytes(32).toString("base64url")}`), "unauthorized", 401);
      const altered = token.slice(0, -1) + (token.endsWith("A") ? "B" : "A");
      await expectRotorError(authenticate(deps, altered), "unauthorized", 401);
      await expectRotorError(authenticate(deps, token + " "), "unauthorized", 401);
    });

    it("a revoked token no longer authenticates; others still do", async () => {
      const admin = await createToken(deps, ACTOR, { kind: "admin" });
      const svc = await createToken(deps, ACTOR, { kind: "service", project: "billing", config: "dev", access: "read/write" });
      deps.clock!.advance(5_000);
      await revokeToken(deps, ACTOR, svc.id);
      await expectRotorError(authenticate(deps, svc.token), "unauthorized", 401);
      expect((await authenticate(deps, admin.token)).tokenId).toBe(admin.id);
      // Revoking again keeps the first revocation time.
      deps.clock!.advance(5_000);
      await revokeToken(deps, ACTOR, svc.id);
      const listed = await listTokens(deps);
      expect(listed.find((t) => t.id === svc.id)?.revokedAt).toBe("2030-01-01T00:00:05.000Z");
      await expectRotorError(revokeToken(deps, ACTOR, "tok_missing"), "not_found", 404);
    });

    it("listTokens shows metadata, never token values or hashes", async () => {
      const admin = await createToken(deps, ACTOR, { kind: "admin" });
      const svc = await createToken(deps, ACTOR, { kind: "service", project: "billing", config: "dev", access: "read", name: "ci" });
      const listed = await listTokens(deps);
      expect(listed.map((t) => t.id).sort()).toEqual([admin.id, svc.id].sort());
      expect(listed.find((t) => t.id === svc.id)).toMatchObject({ kind: "service", project: "billing", config: "dev", access: "read", name: "ci" });
      const text = JSON.stringify(listed);
      for (const t of [admin.token, svc.token]) {
        expect(text).not.toContain(t);
        expect(text).not.toContain(createHash("sha256").update(t).digest("hex"));
      }
      expect(text).not.toMatch(/rtr_/);
    });

    it("a service token needs an existing config", async () => {
      await expectRotorError(createToken(deps, ACTOR, { kind: "service", project: "billing", config: "ghost", access: "read" }), "not_found", 404);
      expect(await listTokens(deps)).toEqual([]);
    });
  });

  describe("activity", () => {
    /** A history with one entry per kind of change, one second apart; returns the token id. */
    async function history() {
      const clock = deps.clock!;
      await createProject(deps, ACTOR, { name: "billing" });
      clock.advance(1000);
      await createConfig(deps, ACTOR, { project: "billing", name: "dev" });
      clock.advance(1000);
      await setSecrets(deps, ACTOR, "billing", "dev", { A: "activity-value-a", B: "activity-value-b" });
      clock.advance(1000);
      await setSecrets(deps, ACTOR, "billing", "dev", { A: null, NOPE: null });
      clock.advance(1000);
      await setSecrets(deps, ACTOR, "billing", "dev", { ALSO_NOPE: null }); // changes nothing: no entry
      clock.advance(1000);
      const svc = await createToken(deps, ACTOR, { kind: "service", project: "billing", config: "dev", access: "read" });
      clock.advance(1000);
      await revokeToken(deps, ACTOR, svc.id);
      clock.advance(1000);
      await createProject(deps, ACTOR, { name: "other" });
    }
    const TYPES_OLDEST_FIRST = [
      "project.created",
      "config.created",
      "secrets.changed",
      "secrets.changed",
      "token.created",
      "token.revoked",
      "project.created",
    ];

    it("writes one entry per change, publishes it, and carries no values", async () => {
      await history();
      const items = await scanRaw(deps.client, deps.tableName);
      const entries = items
        .filter((i) => i.pk.S === "ACTIVITY")
        .sort((a, b) => a.sk.S!.localeCompare(b.sk.S!));
      expect(entries.map((i) => i.type.S)).toEqual(TYPES_OLDEST_FIRST);
      expect(deps.published.map((e) => e.type)).toEqual(TYPES_OLDEST_FIRST);
      expect(deps.published.map((e) => e.id)).toEqual(entries.map((i) => i.id.S));
      const [, , set, del] = deps.published;
      expect(set).toMatchObject({ actor: ACTOR, project: "billing", config: "dev", detail: { names: ["A", "B"], deleted: [] } });
      expect(del.detail).toEqual({ names: ["A"], deleted: ["A"] });
      // One idempotency marker per entry, keyed by the change's id.
      expect(items.filter((i) => i.pk.S!.startsWith("ACTIVITYID#")).map((i) => i.pk.S!.slice("ACTIVITYID#".length)).sort()).toEqual(
        entries.map((i) => i.id.S).sort(),
      );
      const text = JSON.stringify(items.filter((i) => i.kind?.S === "activity")) + JSON.stringify(deps.published);
      expect(text).not.toContain("activity-value");
      expect(text).not.toContain("rtr_");
    });

    it("listActivity: newest first, by project, limited and paged", async () => {
      await history();
      const all = await listActivity(deps, { limit: 100 });
      expect(all.map((e) => e.type)).toEqual([...TYPES_OLDEST_FIRST].reverse());
      expect(all.map((e) => e.at)).toEqual([...all.map((e) => e.at)].sort().reverse());
      const billing = await listActivity(deps, { project: "billing", limit: 100 });
      expect(billing).toHaveLength(6);
      expect(billing.every((e) => e.project === "billing")).toBe(true);
      expect(await listActivity(deps, { limit: 2 })).toHaveLength(2);
      const page2 = await listActivity(deps, { limit: 100, before: all[1].cursor });
      expect(page2.map((e) => e.id)).toEqual(all.slice(2).map((e) => e.id));
      expect(JSON.stringify(all)).not.toContain("activity-value");
    });
  });
});
