/**
 * Dynamic secrets and leases end to end: real PostgreSQL and MariaDB, the embedded Rotor
 * (real lease.asl.json run by aws-local-stepfunctions, the in-process agents), a real SMTP
 * receiver, and the real `rotor` CLI.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import {
  CreateAccessKeyCommand,
  CreateUserCommand,
  DeleteAccessKeyCommand,
  DeleteUserCommand,
  DeleteUserPolicyCommand,
  IAMClient,
  ListAccessKeysCommand,
  ListAttachedUserPoliciesCommand,
  ListUserPoliciesCommand,
  PutUserPolicyCommand,
} from "@aws-sdk/client-iam";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDynamicEnv, type DynamicEnv, type Lease } from "../support/dynamic.ts";
import { apiRequest, readAdminToken, runCli, startMain, tempDir } from "../support/embedded.ts";
import { engines, startTcpProxy, testPassword, waitFor, type TcpProxy } from "../support/rotation.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(engines)("dynamic secrets on $name", (engine) => {
  let env: DynamicEnv;
  beforeAll(async () => {
    env = await startDynamicEnv(engine);
  });
  afterAll(() => env?.stop());

  it("creation checks the managing user: bad credentials are refused with a 4xx and nothing is stored", async () => {
    const bad = await env.api("POST", "/v3/configs/config/dynamic_secrets", {
      body: env.dynamicBody("BADDYN", { managingUser: { username: env.managing.username, password: testPassword("Wrong") } }),
    });
    expect(bad.status).toBe(422);
    expect(bad.json).toMatchObject({ error: "integration_failed" });
    expect(bad.json.message).toMatch(/managing user/);
    const list = await env.api("GET", "/v3/configs/config/dynamic_secrets", { query: { project: env.project, config: env.config } });
    expect(list.json.dynamicSecrets.map((d: { name: string }) => d.name)).not.toContain("BADDYN");
    const get = await env.api("GET", "/v3/configs/config/dynamic_secrets", { query: { project: env.project, config: env.config, name: "BADDYN" } });
    expect(get.status).toBe(404);

    const view = await env.createDynamic("DYN", { defaultTtlSec: 60, maxTtlSec: 14_400 });
    expect(view).toMatchObject({ name: "DYN", provider: engine.provider, defaultTtlSec: 60, maxTtlSec: 14_400, maxLeases: 1000, activeLeases: 0, managingUsername: "rotor_admin" });
    expect(JSON.stringify(view)).not.toContain(env.managing.password);
    const dup = await env.api("POST", "/v3/configs/config/dynamic_secrets", { body: env.dynamicBody("DYN") });
    expect(dup.status).toBe(409);
  });

  it("without include_dynamic_secrets nothing is leased; with it, a unique user that logs in with exactly the grants", async () => {
    const plain = await env.api("GET", "/v3/configs/config/secrets/download", { query: { project: env.project, config: env.config } });
    expect(plain.status).toBe(200);
    expect(Object.keys(plain.json).filter((k) => k.startsWith("DYN_"))).toEqual([]);
    expect(await env.leases("DYN")).toEqual([]);

    const a = await env.lease("DYN");
    const b = await env.lease("DYN");
    expect(a.username).not.toBe(b.username);
    expect(a.password).not.toBe(b.password);
    expect(a.leaseId).toMatch(/^lease_/);
    expect(new Date(a.expiration).toISOString()).toBe(a.expiration);
    expect(Date.parse(a.expiration) - Date.now()).toBeGreaterThan(50_000);
    expect(Date.parse(a.expiration) - Date.now()).toBeLessThanOrEqual(60_000);

    expect(await env.canLogin(a.username, a.password)).toBe(true);
    expect(await env.tryAs(a.username, a.password, "SELECT name FROM items")).toBe("ok");
    expect(await env.tryAs(a.username, a.password, "SELECT * FROM private_stuff")).not.toBe("ok");
    expect(await env.tryAs(a.username, a.password, "INSERT INTO items VALUES (9, 'x')")).not.toBe("ok");
    if (engine.name === "postgres") {
      const until = await env.validUntil(a.username);
      expect(until?.getTime()).toBe(Date.parse(a.expiration));
    }

    const listed = await env.leases("DYN");
    expect(listed.map((l: { leaseId: string }) => l.leaseId).sort()).toEqual([a.leaseId, b.leaseId].sort());
    expect(listed.find((l: { leaseId: string }) => l.leaseId === a.leaseId)).toMatchObject({ username: a.username, state: "active", dynamic: "DYN" });

    // revoke --dynamic: every lease of it, at once
    const all = await env.api("POST", "/v3/leases/revoke", { body: { project: env.project, config: env.config, dynamic: "DYN" } });
    expect(all.status).toBe(200);
    expect(all.json.revoked.sort()).toEqual([a.leaseId, b.leaseId].sort());
    expect(all.json.failed).toEqual([]);
    expect(await env.userExists(a.username)).toBe(false);
    expect(await env.userExists(b.username)).toBe(false);
    expect(await env.leases("DYN")).toEqual([]);
  });

  it("a short lease stops working at expiry and its user is dropped", async () => {
    const l = await env.lease("DYN", 2);
    expect(await env.canLogin(l.username, l.password)).toBe(true);
    await waitFor("the expired user to be dropped", async () => !(await env.userExists(l.username)), 20_000, 100);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(l.expiration));
    expect(await env.canLogin(l.username, l.password)).toBe(false);
    const [lease] = (await env.leases("DYN", true)).filter((x: { leaseId: string }) => x.leaseId === l.leaseId);
    expect(lease).toMatchObject({ state: "revoked", forced: false });
  });

  it("renew moves the expiry (the workflow waits again), never past the max TTL from creation", async () => {
    const l = await env.lease("DYN", 2);
    const renewed = await env.api("POST", `/v3/leases/${l.leaseId}/renew`, { body: { ttlSec: 5 } });
    expect(renewed.status, renewed.text).toBe(200);
    const newExpiry = Date.parse(renewed.json.lease.expiresAt);
    expect(newExpiry).toBeGreaterThan(Date.parse(l.expiration));
    expect(renewed.json.lease.clampedToMaxTtl).toBe(false);
    if (engine.name === "postgres") expect((await env.validUntil(l.username))?.getTime()).toBe(newExpiry);
    // Past the first expiry it still works.
    await sleep(Math.max(0, Date.parse(l.expiration) - Date.now()) + 1_000);
    expect(await env.canLogin(l.username, l.password)).toBe(true);
    // Then it ends at the new expiry.
    await waitFor("the renewed lease to end", async () => !(await env.userExists(l.username)), 20_000, 100);
    expect(Date.now()).toBeGreaterThanOrEqual(newExpiry);

    // Clamped to createdAt + maxTtlSec (4 h).
    const m = await env.lease("DYN", 30);
    const clamped = await env.api("POST", `/v3/leases/${m.leaseId}/renew`, { body: { ttlSec: 5 * 3600 } });
    expect(clamped.status).toBe(200);
    expect(clamped.json.lease.clampedToMaxTtl).toBe(true);
    expect(clamped.json.lease.expiresAt).toBe(clamped.json.lease.maxExpiresAt);
    expect(Date.parse(clamped.json.lease.maxExpiresAt) - (Date.parse(m.expiration) - 30_000)).toBeLessThanOrEqual(14_400_000);
    const revoke = await env.api("POST", `/v3/leases/${m.leaseId}/revoke`, {});
    expect(revoke.status).toBe(200);
  });

  it("revoke ends the lease at once, open sessions included; revoking again is a no-op", async () => {
    const l = await env.lease("DYN", 300);
    const session = await env.openSession(l.username, l.password);
    await session.query("SELECT 1");
    const res = await env.api("POST", `/v3/leases/${l.leaseId}/revoke`, {});
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ outcome: "revoked", leftBehind: null, lease: { state: "revoked" } });
    expect(await env.userExists(l.username)).toBe(false);
    expect(await env.canLogin(l.username, l.password)).toBe(false);
    await waitFor("the open session to be ended", async () => session.query("SELECT 1").then(() => false, () => true), 5_000, 50);
    await session.close();
    const again = await env.api("POST", `/v3/leases/${l.leaseId}/revoke`, {});
    expect(again.status).toBe(200);
    expect(again.json.outcome).toBe("already_revoked");
  });

  it("a user deleted by hand: renewing says it is gone (409), revoking counts it as revoked; an expired lease does not renew", async () => {
    const l = await env.lease("DYN", 300);
    await env.dropByHand(l.username);
    const renew = await env.api("POST", `/v3/leases/${l.leaseId}/renew`, { body: { ttlSec: 600 } });
    expect(renew.status, renew.text).toBe(409);
    expect(renew.json).toMatchObject({ error: "lease_gone", message: expect.stringContaining(l.username) });
    const revoke = await env.api("POST", `/v3/leases/${l.leaseId}/revoke`, {});
    expect(revoke.status, revoke.text).toBe(200);
    expect(revoke.json).toMatchObject({ outcome: "already_gone", lease: { state: "revoked" } });

    const short = await env.lease("DYN", 1);
    await sleep(Math.max(0, Date.parse(short.expiration) - Date.now()) + 50);
    const late = await env.api("POST", `/v3/leases/${short.leaseId}/renew`, { body: { ttlSec: 600 } });
    expect(late.status, late.text).toBe(400);
    expect(late.json.message).toMatch(/expired at|is revoked/);
    await waitFor("the expired lease to be revoked", async () => !(await env.userExists(short.username)), 20_000, 100);

    const unknown = await env.cli(["leases", "list", "--dynamic", "NOPE"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe("rotor: dynamic secret 'NOPE' does not exist in rot/prod (not_found)\n");
  });

  it("TTLs: above the max, zero, negative, fractional or unparseable are refused with a clear 400 and nothing is leased", async () => {
    const before = await env.leasedUsers();
    const cases: Array<[string, RegExp]> = [
      ["14401", /exceeds DYN's max TTL of 14400s/],
      ["0", /positive/],
      ["-5", /positive/],
      ["1.5", /whole number/],
      ["abc", /number/],
      ["", /number|positive/],
    ];
    for (const [ttl, message] of cases) {
      const res = await env.leaseRaw({ dynamic_secrets_ttl_sec: ttl });
      expect(res.status, `ttl ${JSON.stringify(ttl)}: ${res.text}`).toBe(400);
      expect(res.json.error).toBe("invalid_request");
      expect(res.json.message).toMatch(message);
    }
    const bad = await env.api("GET", "/v3/configs/config/secrets", { query: { project: env.project, config: env.config, include_dynamic_secrets: "true", dynamic_secrets_ttl_sec: 99_999 } });
    expect(bad.status).toBe(400);
    expect(await env.leasedUsers()).toEqual(before);
    expect(await env.leases("DYN")).toEqual([]);

    const l = await env.lease("DYN", 60);
    for (const ttlSec of [0, -1, 2.5, "1h"]) {
      const res = await env.api("POST", `/v3/leases/${l.leaseId}/renew`, { body: { ttlSec } });
      expect(res.status, res.text).toBe(400);
      expect(res.json).toMatchObject({ error: expect.any(String), message: expect.stringMatching(/ttlSec/) });
    }
    expect((await env.api("POST", "/v3/leases/lease_doesnotexist/renew", { body: { ttlSec: 60 } })).status).toBe(404);
    expect((await env.api("POST", "/v3/leases/not-a-lease/revoke", {})).status).toBe(400);
    expect((await env.api("POST", `/v3/leases/${l.leaseId}/revoke`, {})).status).toBe(200);

    // The CLI: a duration it can't parse, or zero, is one line and exit 2, before any request.
    for (const ttl of ["0", "1y", "-5m", "abc"]) {
      const r = await env.cli(["secrets", "download", "--no-file", "--dynamic-ttl", ttl]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/^rotor: '.*' (is not a duration|must be longer than zero)/);
    }
    // Above the max: the API's message, one line, exit 1.
    const over = await env.cli(["run", "--dynamic-ttl", "5h", "--", "node", "-e", "console.log('ran')"]);
    expect(over.code).toBe(1);
    expect(over.stdout).toBe("");
    expect(over.stderr).toMatch(/^rotor: the TTL 18000s exceeds DYN's max TTL of 14400s \(invalid_request\)\n$/);
    expect(await env.leases("DYN")).toEqual([]);
  });

  it("rotor run --dynamic-ttl 90m injects a working lease; secrets download --dynamic-ttl 3h prints one", async () => {
    const login =
      engine.name === "postgres"
        ? `const pg = (await import("pg")).default; const c = new pg.Client({ host: e.DYN_HOST, port: +e.DYN_PORT, database: e.DYN_DATABASE, user: e.DYN_USERNAME, password: e.DYN_PASSWORD }); await c.connect(); const r = await c.query("SELECT count(*)::int AS n FROM items"); await c.end(); n = r.rows[0].n;`
        : `const my = (await import("mysql2/promise")).default; const c = await my.createConnection({ host: e.DYN_HOST, port: +e.DYN_PORT, database: e.DYN_DATABASE, user: e.DYN_USERNAME, password: e.DYN_PASSWORD }); const [rows] = await c.query("SELECT count(*) AS n FROM items"); await c.end(); n = rows[0].n;`;
    const script = `const e = process.env; let n; ${login} console.log(JSON.stringify({ user: e.DYN_USERNAME, lease: e.DYN_LEASE_ID, exp: e.DYN_LEASE_EXPIRATION, rows: n }));`;
    const started = Date.now();
    const run = await env.cli(["run", "--dynamic-ttl", "90m", "--", "node", "--input-type=module", "-e", script]);
    expect(run.code, run.stderr).toBe(0);
    const seen = JSON.parse(run.stdout) as { user: string; lease: string; exp: string; rows: number };
    expect(seen.rows).toBe(2);
    expect(seen.user).toMatch(/^rotor_[a-z0-9]{16}$/);
    expect(Date.parse(seen.exp) - started).toBeGreaterThanOrEqual(90 * 60_000 - 1_000);
    expect(Date.parse(seen.exp) - Date.now()).toBeLessThanOrEqual(90 * 60_000);
    expect((await env.leases("DYN")).map((l: { leaseId: string }) => l.leaseId)).toEqual([seen.lease]);

    const dl = await runCliRaw(env, ["secrets", "download", "--no-file", "--dynamic-ttl", "3h"]);
    expect(dl.code, dl.stderr).toBe(0);
    const values = JSON.parse(dl.stdout) as Record<string, string>;
    env.passwords.add(values.DYN_PASSWORD);
    const l = env.leaseOf(values, "DYN");
    expect(Object.keys(values).filter((k) => k.startsWith("DYN_")).sort()).toEqual(
      ["DYN_DATABASE", "DYN_HOST", "DYN_LEASE_EXPIRATION", "DYN_LEASE_ID", "DYN_PASSWORD", "DYN_PORT", "DYN_USERNAME"],
    );
    expect(values.DYN_HOST).toBe(env.db.host);
    expect(values.DYN_PORT).toBe(String(env.db.port));
    expect(Math.abs(Date.parse(l.expiration) - Date.now() - 3 * 3600_000)).toBeLessThan(60_000);
    expect(await env.canLogin(l.username, l.password)).toBe(true);
    expect(await env.userExists(seen.user)).toBe(true);

    // Without --dynamic-ttl nothing is leased.
    const plain = await env.cli(["secrets", "download", "--no-file"]);
    expect(plain.code).toBe(0);
    expect(Object.keys(JSON.parse(plain.stdout)).some((k) => k.startsWith("DYN_"))).toBe(false);
    expect(await env.leases("DYN")).toHaveLength(2);

    const all = await env.cli(["leases", "revoke", "--dynamic", "DYN"]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout.trim().split("\n").sort()).toEqual([`${l.leaseId}: revoked`, `${seen.lease}: revoked`].sort());
    expect(await env.leasedUsers()).toEqual([]);
  });

  it("the CLI manages dynamic secrets and leases: create (spec on stdin), list, get, leases list/renew/revoke, delete", async () => {
    const spec = env.dynamicBody("IGNORED", { project: "elsewhere", config: "nowhere", provider: "aws-iam-user", defaultTtlSec: 120, maxTtlSec: 3600, maxLeases: 2 });
    const created = await env.cli(["dynamic", "create", "CLIDYN", "--provider", engine.provider, "--file", "-"], JSON.stringify(spec));
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toBe(`created dynamic secret CLIDYN (${engine.provider}): default TTL 2m, max TTL 1h, at most 2 active leases\n`);

    const badCreds = await env.cli(["dynamic", "create", "CLIBAD", "--provider", engine.provider, "--file", "-"], JSON.stringify({ ...spec, managingUser: { username: "rotor_admin", password: "wrong-password" } }));
    expect(badCreds.code).toBe(1);
    expect(badCreds.stderr).toMatch(/^rotor: the .* integration does not work: .*\(integration_failed\)\n$/);
    const badProvider = await env.cli(["dynamic", "create", "X", "--provider", "oracle", "--file", "-"], "{}");
    expect(badProvider.code).toBe(2);
    expect(badProvider.stderr).toBe("rotor: unknown provider 'oracle': use one of aws-iam-user, postgres, mysql\n");
    const notJson = await env.cli(["dynamic", "create", "X", "--provider", engine.provider, "--file", "-"], "{nope");
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toBe("rotor: standard input is not valid JSON\n");

    const list = await env.cli(["dynamic", "list"]);
    expect(list.code).toBe(0);
    const rows = list.stdout.trim().split("\n");
    expect(rows[0]).toMatch(/^name\s+provider\s+defaultTtl\s+maxTtl\s+activeLeases\s+maxLeases\s+createdAt$/);
    expect(rows.find((r) => r.startsWith("CLIDYN "))).toMatch(new RegExp(`^CLIDYN\\s+${engine.provider}\\s+2m\\s+1h\\s+0\\s+2\\s`));
    const get = await env.cli(["dynamic", "get", "CLIDYN"]);
    expect(get.code).toBe(0);
    expect(JSON.parse(get.stdout)).toMatchObject({ name: "CLIDYN", project: env.project, config: env.config, defaultTtlSec: 120, maxTtlSec: 3600, maxLeases: 2 });
    expect(get.stdout).not.toContain(env.managing.password);
    const missing = await env.cli(["dynamic", "get", "NOPE"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^rotor: dynamic secret 'NOPE' does not exist in rot\/prod \(not_found\)\n$/);

    // Each read now leases DYN and CLIDYN.
    const values = (await env.leaseRaw({ dynamic_secrets_ttl_sec: 60 })).json as Record<string, string>;
    const l = env.leaseOf(values, "CLIDYN");
    expect(await env.canLogin(l.username, l.password)).toBe(true);
    const leases = await env.cli(["leases", "list", "--dynamic", "CLIDYN"]);
    expect(leases.code).toBe(0);
    const lines = leases.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(new RegExp(`^${l.leaseId}\\s+CLIDYN\\s+${l.username}\\s+active\\s+${l.expiration.replace(/\./g, "\\.")}\\s+0$`));
    expect((await env.cli(["leases", "list"])).stdout.trim().split("\n")).toHaveLength(3);

    const renew = await env.cli(["leases", "renew", l.leaseId, "--ttl", "30m"]);
    expect(renew.code, renew.stderr).toBe(0);
    expect(renew.stdout).toMatch(new RegExp(`^renewed ${l.leaseId} until \\d{4}-.*Z\\n$`));
    const until = Date.parse(renew.stdout.trim().split(" ").pop()!);
    expect(Math.abs(until - Date.now() - 30 * 60_000)).toBeLessThan(30_000);
    if (engine.name === "postgres") expect((await env.validUntil(l.username))?.getTime()).toBe(until);
    const tooLong = await env.cli(["leases", "renew", l.leaseId, "--ttl", "2h"]);
    expect(tooLong.code).toBe(0);
    expect(tooLong.stderr).toMatch(/^note: capped at the lease's max TTL/);
    const badTtl = await env.cli(["leases", "renew", l.leaseId, "--ttl", "soon"]);
    expect(badTtl.code).toBe(2);
    expect(badTtl.stderr).toBe("rotor: 'soon' is not a duration: use a whole number with s, m, h or d (e.g. 90m)\n");
    const badId = await env.cli(["leases", "revoke", "12345"]);
    expect(badId.code).toBe(2);
    expect(badId.stderr).toBe("rotor: '12345' is not a lease id (lease_…): see rotor leases list\n");
    const both = await env.cli(["leases", "revoke"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe("rotor: give either a lease id or --dynamic NAME\n");

    const inUse = await env.cli(["dynamic", "delete", "CLIDYN"]);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toMatch(/^rotor: dynamic secret 'CLIDYN' has 1 active lease\(s\): revoke them first .*\(conflict\)\n$/);

    const revoke = await env.cli(["leases", "revoke", l.leaseId]);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toBe(`${l.leaseId}: revoked\n`);
    expect(await env.userExists(l.username)).toBe(false);
    const again = await env.cli(["leases", "revoke", l.leaseId]);
    expect(again.stdout).toBe(`${l.leaseId}: already revoked\n`);
    const rest = await env.cli(["leases", "revoke", "--dynamic", "DYN"]);
    expect(rest.code).toBe(0);
    expect(rest.stdout).toBe(`${values.DYN_LEASE_ID}: revoked\n`);
    expect((await env.cli(["leases", "revoke", "--dynamic", "DYN"])).stdout).toBe("DYN had no active leases\n");

    const del = await env.cli(["dynamic", "delete", "CLIDYN"]);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toBe("deleted dynamic secret CLIDYN\n");
    expect((await env.cli(["dynamic", "list", "--json"])).stdout).not.toContain("CLIDYN");
    expect(await env.leasedUsers()).toEqual([]);
  });

  it("a dynamic secret's cap on active leases answers 429 and creates nothing; a revoke frees a slot", async () => {
    await env.createDynamic("CAPPED", { maxLeases: 2, defaultTtlSec: 60 });
    await env.lease("CAPPED");
    await env.lease("CAPPED");
    const users = await env.leasedUsers();
    expect(users).toHaveLength(4); // two reads, each leasing DYN and CAPPED
    const capped = await env.leaseRaw();
    expect(capped.status).toBe(429);
    expect(capped.json).toEqual({ error: "too_many", message: "CAPPED has 2 active leases, its cap: revoke some or raise maxLeases" });
    // All or nothing: the DYN lease that read made was revoked again.
    expect((await env.leasedUsers()).sort()).toEqual(users.sort());
    expect(await env.leases("DYN")).toHaveLength(2);
    expect((await env.api("GET", "/v3/configs/config/dynamic_secrets", { query: { project: env.project, config: env.config, name: "CAPPED" } })).json.dynamicSecrets[0].activeLeases).toBe(2);

    const [first] = await env.leases("CAPPED");
    expect((await env.api("POST", `/v3/leases/${first.leaseId}/revoke`, {})).status).toBe(200);
    const third = await env.lease("CAPPED");
    expect(await env.canLogin(third.username, third.password)).toBe(true);

    for (const name of ["CAPPED", "DYN"]) {
      expect((await env.api("POST", "/v3/leases/revoke", { body: { project: env.project, config: env.config, dynamic: name } })).json.failed).toEqual([]);
    }
    expect((await env.api("DELETE", "/v3/configs/config/dynamic_secret", { query: { project: env.project, config: env.config, name: "CAPPED" } })).status).toBe(200);
    expect(await env.leasedUsers()).toEqual([]);
  });

  it("leak test: no lease or managing password in the stored items, logs, events, emails, API errors, CLI output or workflow histories", async () => {
    const leases = await env.leases(undefined, true);
    expect(leases.length).toBeGreaterThan(10);
    expect(env.passwords.size).toBeGreaterThan(leases.length); // every served lease password is in the set
    const histories = await Promise.all(leases.map((l: { leaseId: string }) => env.history(l.leaseId)));
    const states = new Set(histories.flat().map((e) => e.stateName).filter(Boolean));
    for (const s of ["WaitForExpiry", "CheckLease", "RevokeLease"]) expect(states).toContain(s);
    expect(await env.findLeaks()).toEqual([]);
  });
});

/** The CLI without recording its output (it prints lease passwords on purpose). */
function runCliRaw(env: DynamicEnv, args: string[]) {
  return runCli(args, { env: { ROTOR_API_URL: env.rotor.url, ROTOR_TOKEN: env.token, ROTOR_PROJECT: env.project, ROTOR_CONFIG: env.config }, timeoutMs: 60_000 });
}

describe("postgres: no orphans under failures, forced revoke, crash, aws-iam-user", () => {
  let env: DynamicEnv;
  let proxy: TcpProxy;
  /** Output of the child Rotor processes, for the leak test. */
  const childOutput: string[] = [];
  beforeAll(async () => {
    env = await startDynamicEnv(engines[0], { failureThreshold: 3 });
    proxy = await startTcpProxy(env.db.host, env.db.port);
    for (const config of ["flaky", "aws"]) expect((await env.api("POST", "/v3/configs", { body: { project: env.project, name: config } })).status).toBe(200);
    // Through the proxy, so a test can make the database unreachable.
    await env.createDynamic("FLAKY", { config: "flaky", connection: { host: "127.0.0.1", port: proxy.port, database: env.db.database }, defaultTtlSec: 8 });
  });
  afterAll(async () => {
    await proxy?.stop();
    await env?.stop();
  });

  it("no orphans: 200 leases whose revocation fails at random for a while are all revoked afterwards, and the stuck alert fired", async () => {
    const leases: Lease[] = [];
    const queue = Array.from({ length: 200 }, (_, i) => i);
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (queue.shift() !== undefined) {
          const res = await env.leaseRaw({ config: "flaky", dynamic_secrets_ttl_sec: 6 });
          expect(res.status, res.text).toBe(200);
          leases.push(env.leaseOf(res.json, "FLAKY"));
        }
      }),
    );
    expect(new Set(leases.map((l) => l.username)).size).toBe(200);
    const lastExpiry = Math.max(...leases.map((l) => Date.parse(l.expiration)));

    // The database is unreachable most of the time, at random, until every lease has expired
    // and at least one revocation failed often enough to be reported stuck.
    let flapping = true;
    const flapper = (async () => {
      while (flapping) {
        if (Math.random() < 0.8) await proxy.down();
        else await proxy.up();
        await sleep(50 + Math.random() * 250);
      }
    })();
    try {
      // Sampled once, just after the last expiry: later, a lucky "up" window may have let
      // every revocation through already.
      let aliveAfterExpiry: number | undefined;
      await waitFor(
        "a lease reported stuck after every expiry",
        async () => {
          if (Date.now() <= lastExpiry + 1_000) return false;
          aliveAfterExpiry ??= (await env.leasedUsers()).length;
          return env.events.some((e) => e.type === "lease.stuck");
        },
        60_000,
        100,
      );
      expect(aliveAfterExpiry).toBeGreaterThan(0); // the failures did hold revocation up
    } finally {
      flapping = false;
      await flapper;
      await proxy.up();
    }

    await waitFor("every leased user to be dropped", async () => (await env.leasedUsers()).length === 0, 90_000, 250);
    const records = (await env.leases("FLAKY", true, "flaky")).filter((l: { leaseId: string }) => leases.some((x) => x.leaseId === l.leaseId));
    expect(records).toHaveLength(200);
    expect(records.filter((l: { state: string }) => l.state !== "revoked")).toEqual([]);
    expect(records.filter((l: { forced: boolean }) => l.forced)).toEqual([]);
    const failed = records.filter((l: { revokeFailures: number }) => l.revokeFailures > 0);
    expect(failed.length).toBeGreaterThan(0);
    const stuck = records.filter((l: { stuck: boolean }) => l.stuck);
    expect(stuck.length).toBeGreaterThan(0);
    expect(stuck.every((l: { revokeFailures: number }) => l.revokeFailures >= 3)).toBe(true);
    for (const l of stuck) {
      const username = l.username as string;
      expect(env.events.filter((e) => e.type === "lease.stuck" && e.detail.leaseId === l.leaseId)).toHaveLength(1);
      expect(env.smtp.mails.some((m) => m.to.includes(env.notifyEmail) && m.subject === `Rotor: cannot revoke postgres user ${username} in rot/flaky/FLAKY's database (lease ${l.leaseId})`)).toBe(true);
    }
    const entries: Array<{ type: string; detail: Record<string, unknown> }> = [];
    let cursor: string | undefined;
    do {
      const page = await env.api("GET", "/v3/activity", { query: { limit: 500, cursor } });
      expect(page.status).toBe(200);
      entries.push(...page.json.activity);
      cursor = page.json.next;
    } while (cursor);
    const stuckEntries = entries.filter((e) => e.type === "lease.stuck").map((e) => e.detail.leaseId);
    expect(stuckEntries.sort()).toEqual(stuck.map((l: { leaseId: string }) => l.leaseId).sort());
  });

  it("revoke --force when the database can't be reached: one-line refusal without it, then closes the record and says what may be left behind", async () => {
    const l = env.leaseOf((await env.leaseRaw({ config: "flaky", dynamic_secrets_ttl_sec: 300 })).json, "FLAKY");
    await proxy.down();
    try {
      const refused = await env.cli(["-c", "flaky", "leases", "revoke", l.leaseId]);
      expect(refused.code, refused.stderr).toBe(1);
      expect(refused.stdout).toBe("");
      expect(refused.stderr).toMatch(new RegExp(`^rotor: could not revoke ${l.leaseId}: could not reach the database \\(ECONNREFUSED\\) \\(lease_failed\\)\\n$`));
      const forced = await env.cli(["-c", "flaky", "leases", "revoke", l.leaseId, "--force"]);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.stderr).toBe(`warning: postgres user ${l.username} in rot/flaky/FLAKY's database may still exist (its VALID UNTIL is ${l.expiration}): delete it by hand\n`);
      expect(forced.stdout).toBe(`${l.leaseId}: forced\n`);
    } finally {
      await proxy.up();
    }
    const [record] = (await env.leases("FLAKY", true, "flaky")).filter((x: { leaseId: string }) => x.leaseId === l.leaseId);
    expect(record).toMatchObject({ state: "revoked", forced: true });
    expect(await env.userExists(l.username)).toBe(true); // exactly what the warning said
    await env.dropByHand(l.username);
  });

  it("crash: leases of a server killed with SIGKILL are revoked within seconds of their expiry after a restart on the same data dir", async () => {
    const dataDir = tempDir("rotor-dyn-crash-");
    try {
      const first = await startMain(dataDir);
      const token = readAdminToken(dataDir);
      const call = (url: string, method: string, path: string, o: { body?: unknown; query?: Record<string, string | number | boolean> } = {}) => apiRequest(url, method, path, { token, ...o });
      expect((await call(first.url, "POST", "/v3/projects", { body: { name: "crash" } })).status).toBe(200);
      expect((await call(first.url, "POST", "/v3/configs", { body: { project: "crash", name: "prod" } })).status).toBe(200);
      const created = await call(first.url, "POST", "/v3/configs/config/dynamic_secrets", { body: env.dynamicBody("CRASHDYN", { project: "crash", config: "prod" }) });
      expect(created.status, created.text).toBe(200);
      const lease = async (ttl: number) => {
        const res = await call(first.url, "GET", "/v3/configs/config/secrets/download", { query: { project: "crash", config: "prod", include_dynamic_secrets: true, dynamic_secrets_ttl_sec: ttl } });
        expect(res.status, `${res.text} ${first.stderr}`).toBe(200);
        env.passwords.add(res.json.CRASHDYN_PASSWORD);
        return env.leaseOf(res.json, "CRASHDYN");
      };
      const early = await lease(2); // expires while the server is down
      const late = await lease(8); // expires after the restart
      const killed = new Promise((r) => first.child.once("close", r));
      first.child.kill("SIGKILL");
      await killed;
      childOutput.push(first.stdout, first.stderr);

      await sleep(Math.max(0, Date.parse(early.expiration) - Date.now()) + 500);
      expect(await env.userExists(early.username)).toBe(true); // nobody revoked it...
      expect(await env.canLogin(early.username, early.password)).toBe(false); // ...but PostgreSQL's VALID UNTIL holds

      const second = await startMain(dataDir);
      const restartedAt = Date.now();
      try {
        await waitFor("both crashed leases to be revoked", async () => !(await env.userExists(early.username)) && !(await env.userExists(late.username)), 30_000, 100);
        const listed = await call(second.url, "GET", "/v3/leases", { query: { project: "crash", config: "prod", include_revoked: "true" } });
        const byId = new Map((listed.json.leases as Array<{ leaseId: string; state: string; revokedAt: string; expiresAt: string }>).map((l) => [l.leaseId, l]));
        for (const l of [early, late]) {
          const record = byId.get(l.leaseId)!;
          expect(record.state).toBe("revoked");
          const revokedAt = Date.parse(record.revokedAt);
          expect(revokedAt).toBeGreaterThanOrEqual(Date.parse(l.expiration));
          expect(revokedAt - Math.max(Date.parse(l.expiration), restartedAt)).toBeLessThan(10_000);
        }
        const activity = await call(second.url, "GET", "/v3/activity", { query: { limit: 100 } });
        const revokedBy = activity.json.activity.filter((e: { type: string }) => e.type === "lease.revoked").map((e: { actor: string }) => e.actor);
        expect(revokedBy).toEqual(["rotor:reconciler", "rotor:reconciler"]);
      } finally {
        const exit = await second.stop();
        childOutput.push(exit.stdout, exit.stderr);
        expect(exit.code, exit.stderr).toBe(0);
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("aws-iam-user (IAM and STS mocked): lease and revoke, a failure cleaned up, and no secret key stored, logged or echoed", async () => {
    const iam = mockClient(IAMClient);
    const sts = mockClient(STSClient);
    try {
      const integrationSecret = `IntegrationSecret${randomBytes(12).toString("hex")}`;
      const leaseSecrets: string[] = [];
      const awsError = (name: string, message: string, status: number) => Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
      sts.on(GetCallerIdentityCommand).resolves({ Account: "123456789012", Arn: "arn:aws:iam::123456789012:user/rotor-integration", UserId: "AIDAINTEGRATION" });
      iam.on(CreateUserCommand).callsFake((input: { UserName: string }) => ({
        User: { UserName: input.UserName, Path: "/rotor/", Arn: `arn:aws:iam::123456789012:user/rotor/${input.UserName}`, UserId: `AIDA${randomBytes(8).toString("hex").toUpperCase()}`, CreateDate: new Date() },
      }));
      iam.on(PutUserPolicyCommand).resolves({});
      iam.on(CreateAccessKeyCommand).callsFake((input: { UserName: string }) => {
        const secret = `LeaseSecret${randomBytes(12).toString("hex")}`;
        leaseSecrets.push(secret);
        return { AccessKey: { UserName: input.UserName, AccessKeyId: `AKIA${randomBytes(8).toString("hex").toUpperCase()}`, SecretAccessKey: secret, Status: "Active" } };
      });
      iam.on(ListAccessKeysCommand).callsFake((input: { UserName: string }) => ({ AccessKeyMetadata: [{ UserName: input.UserName, AccessKeyId: "AKIALEASED" }] }));
      iam.on(DeleteAccessKeyCommand).resolves({});
      iam.on(ListUserPoliciesCommand).resolves({ PolicyNames: ["rotor-lease-policy"] });
      iam.on(DeleteUserPolicyCommand).resolves({});
      iam.on(ListAttachedUserPoliciesCommand).resolves({ AttachedPolicies: [] });
      iam.on(DeleteUserCommand).resolves({});

      const spec = (o: Record<string, unknown> = {}) => ({
        project: env.project,
        config: "aws",
        name: "AWSDYN",
        provider: "aws-iam-user",
        integration: { type: "accessKey", accessKeyId: "AKIAINTEGRATION00001", secretAccessKey: integrationSecret },
        policy: { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::bucket/*" }] },
        ...o,
      });
      const noStatement = await env.api("POST", "/v3/configs/config/dynamic_secrets", { body: spec({ policy: { Version: "2012-10-17" } }) });
      expect(noStatement.status).toBe(400);
      expect(noStatement.text).toMatch(/Statement/);
      sts.on(GetCallerIdentityCommand).rejects(awsError("InvalidClientTokenId", `The security token included in the request is invalid (${integrationSecret})`, 403));
      const refused = await env.api("POST", "/v3/configs/config/dynamic_secrets", { body: spec() });
      sts.on(GetCallerIdentityCommand).resolves({ Account: "123456789012", Arn: "arn:aws:iam::123456789012:user/rotor-integration", UserId: "AIDAINTEGRATION" });
      expect(refused.status).toBe(422);
      expect(refused.json.message).toMatch(/^the AWS integration does not work: .*InvalidClientTokenId/);
      expect(refused.text).not.toContain(integrationSecret);
      expect((await env.api("POST", "/v3/configs/config/dynamic_secrets", { body: spec() })).status).toBe(200);

      const res = await env.leaseRaw({ config: "aws", dynamic_secrets_ttl_sec: 600 });
      expect(res.status, res.text).toBe(200);
      const v = res.json as Record<string, string>;
      expect(Object.keys(v).sort()).toEqual(
        ["ACCESS_KEY_ID", "ARN", "LEASE_EXPIRATION", "LEASE_ID", "POLICY_NAME", "SECRET_ACCESS_KEY", "USERNAME", "USER_ID"].map((k) => `AWSDYN_${k}`),
      );
      expect(v.AWSDYN_USERNAME).toMatch(/^Rotor-Dynamic-[a-z0-9]{20}$/);
      expect(v.AWSDYN_ARN).toBe(`arn:aws:iam::123456789012:user/rotor/${v.AWSDYN_USERNAME}`);
      expect(v.AWSDYN_SECRET_ACCESS_KEY).toBe(leaseSecrets[0]);
      expect(v.AWSDYN_LEASE_EXPIRATION).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(iam.commandCalls(CreateUserCommand)[0].args[0].input).toMatchObject({ UserName: v.AWSDYN_USERNAME, Path: "/rotor/" });
      expect(iam.commandCalls(PutUserPolicyCommand)[0].args[0].input.PolicyDocument).toBe(JSON.stringify(spec().policy));

      const revoked = await env.api("POST", `/v3/leases/${v.AWSDYN_LEASE_ID}/revoke`, {});
      expect(revoked.json.outcome).toBe("revoked");
      expect(iam.commandCalls(DeleteUserCommand).map((c) => c.args[0].input.UserName)).toEqual([v.AWSDYN_USERNAME]);

      // A failure after CreateUser: the user is deleted, the reader gets one clear error without secrets.
      iam.on(PutUserPolicyCommand).rejects(awsError("AccessDenied", `not authorized (signed with ${integrationSecret})`, 403));
      const failed = await env.leaseRaw({ config: "aws" });
      iam.on(PutUserPolicyCommand).resolves({});
      expect(failed.status).toBe(502);
      expect(failed.json.message).toMatch(/PutUserPolicy.*AccessDenied.*the user was deleted/);
      expect(failed.text).not.toContain(integrationSecret);
      const failedUser = iam.commandCalls(CreateUserCommand)[1].args[0].input.UserName;
      expect(iam.commandCalls(DeleteUserCommand).map((c) => c.args[0].input.UserName)).toContain(failedUser);
      expect(await env.leases("AWSDYN", false, "aws")).toEqual([]);
      expect((await env.api("GET", "/v3/configs/config/dynamic_secrets", { query: { project: env.project, config: "aws", name: "AWSDYN" } })).json.dynamicSecrets[0].activeLeases).toBe(0);

      expect(await env.findLeaks({ secrets: [integrationSecret, ...leaseSecrets], configs: ["aws"] })).toEqual([]);
    } finally {
      iam.restore();
      sts.restore();
    }
  });

  it("leak test: no lease or managing password anywhere, the child servers' output included", async () => {
    expect(env.passwords.size).toBeGreaterThan(200);
    expect(await env.findLeaks({ configs: ["prod", "flaky"], extra: { children: childOutput.join("\n") } })).toEqual([]);
  });
});
