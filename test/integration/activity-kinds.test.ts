/**
 * One activity entry for every kind of event, each with who, when, where and the expected
 * detail, and not one secret in any of them: one embedded Rotor with a real PostgreSQL, each
 * event caused the way a user (or a failure) would cause it, then the whole log read back
 * through GET /v3/activity, page by page, and the events of the bus and of a real webhook
 * receiver searched for every value the test saw.
 */
import type { ActivityEntry } from "../../core/activity.ts";
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EVENT_TYPES, type EventType } from "../../core/events.ts";
import { startDynamicEnv, type DynamicEnv } from "../support/dynamic.ts";
import { engines, startTcpProxy, testPassword, waitFor, type TcpProxy } from "../support/rotation.ts";

let env: DynamicEnv;
let proxy: TcpProxy;
let receiver: Server;
const received: string[] = [];
let receiverUrl = "";
/** Every secret value the test saw besides env.passwords: token values, webhook secret, static values. */
const seen = new Set<string>();

type Entry = ActivityEntry;
const entries: Entry[] = [];
const ids: Record<string, string> = {};

async function ok(res: Promise<{ status: number; json: any; text: string }>, status = 200) {
  const r = await res;
  expect(r.status, r.text).toBe(status);
  return r.json;
}

beforeAll(async () => {
  received.length = 0;
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push(JSON.stringify(req.headers) + body);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", () => r()));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`;
  // project.created and config.created: the env creates its project and config.
  env = await startDynamicEnv(engines[0], { failureThreshold: 2 });
  seen.add(env.token);
  proxy = await startTcpProxy(env.db.host, env.db.port);
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await env?.stop();
  await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
});

describe("activity: every event kind", () => {
  it("causes every kind of event", async () => {
    const { project, config } = env;
    const scope = { project, config };

    // The webhook first, so it receives every event that follows.
    const hook = await ok(env.api("POST", "/v3/webhooks", { body: { project, url: receiverUrl } }));
    ids.webhook = hook.webhook.id;
    seen.add(hook.secret);

    const staticValue = testPassword("Static");
    seen.add(staticValue);
    await ok(env.api("POST", "/v3/configs/config/secrets", { body: { ...scope, secrets: { STATIC_ONE: staticValue } } }));

    const token = await ok(env.api("POST", "/v3/tokens", { body: { ...scope, access: "read", name: "kinds" } }));
    ids.token = token.id;
    seen.add(token.token);
    await ok(env.api("DELETE", `/v3/tokens/${token.id}`));

    // rotation.created, rotation.succeeded
    await env.createRotated("ROT");
    expect((await env.flip("ROT")).status).toBe("SUCCEEDED");

    // rotation.paused (a password changed outside Rotor), rotation.resumed with that value,
    // then rotation.deleted.
    const { users } = await env.createRotated("EXT");
    const outside = testPassword("Outside");
    seen.add(outside);
    await env.engine.setPasswordOutside(env.db, users[1].username, outside);
    expect((await env.flip("EXT")).status).toBe("FAILED");
    expect((await env.getRotated("EXT")).state).toBe("paused");
    await ok(env.api("POST", "/v3/configs/config/rotated_secrets/resume", { body: { ...env.ref("EXT"), passwords: [null, outside] } }));
    await ok(env.api("DELETE", "/v3/configs/config/rotated_secret", { query: { ...scope, name: "EXT" } }));

    // rotation.failed: the database unreachable during a flip; then it heals.
    await env.createRotated("DOWN", { port: proxy.port });
    await proxy.down();
    let flipId: string;
    try {
      flipId = await env.rotateNow("DOWN");
      await waitFor("a rotation.failed event", () => env.events.some((e) => e.type === "rotation.failed" && e.detail.name === "DOWN"), 20_000);
    } finally {
      await proxy.up();
    }
    expect(await env.wait(flipId)).toBe("SUCCEEDED");

    // dynamic.created, lease.created, lease.renewed, lease.revoked, dynamic.deleted
    await env.createDynamic("DYN");
    const lease = await env.lease("DYN", 600);
    ids.lease = lease.leaseId;
    await ok(env.api("POST", `/v3/leases/${lease.leaseId}/renew`, { body: { ttlSec: 900 } }));
    await ok(env.api("POST", `/v3/leases/${lease.leaseId}/revoke`, { body: {} }));
    await ok(env.api("DELETE", "/v3/configs/config/dynamic_secret", { query: { ...scope, name: "DYN" } }));

    // lease.stuck: a short lease whose database is unreachable when it expires.
    await env.createDynamic("FLAKY", { connection: { host: "127.0.0.1", port: proxy.port, database: env.db.database } });
    const flaky = await env.lease("FLAKY", 1);
    ids.stuck = flaky.leaseId;
    await proxy.down();
    try {
      await waitFor("a lease.stuck event", () => env.events.some((e) => e.type === "lease.stuck" && e.detail.leaseId === flaky.leaseId), 30_000, 50);
    } finally {
      await proxy.up();
    }
    await waitFor("the stuck lease to be revoked once the database is back", async () => !(await env.userExists(flaky.username)), 30_000, 100);

    await ok(env.api("DELETE", `/v3/webhooks/${ids.webhook}`));

    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await ok(env.api("GET", "/v3/activity", { query: { limit: 7, cursor } }));
      expect(page.activity.length).toBeLessThanOrEqual(7);
      entries.push(...page.activity);
      cursor = page.next;
      pages++;
    } while (cursor);
    expect(pages).toBeGreaterThan(1);
    expect(new Set(entries.map((e) => e.id)).size).toBe(entries.length); // paging repeats nothing
  }, 60_000);

  it("has an entry for every event kind (no kind left untriggerable)", () => {
    expect([...new Set(entries.map((e) => e.type))].sort()).toEqual([...EVENT_TYPES].sort());
    // What the bus carried is what the log holds (the env listens from just after the server
    // started: the admin token's creation went out before).
    const busIds = new Set(env.events.map((e) => e.id));
    const listening = env.events[0].at;
    const missing = entries.filter((e) => e.at >= listening && !busIds.has(e.id)).map((e) => `${e.type} ${e.id}`);
    expect(missing).toEqual([]);
    expect(entries.filter((e) => e.at < listening).map((e) => e.type)).toEqual(["token.created"]);
  });

  it("each entry says who, when, where and what", () => {
    const one = (type: EventType, match: (d: Record<string, unknown>) => boolean = () => true) => {
      const found = entries.filter((e) => e.type === type && match(e.detail));
      // Each change the test made is recorded once.
      expect(found.length, `${type} entries`).toBe(1);
      return found[0];
    };
    const { project, config } = env;
    const admin = entries.find((e) => e.type === "project.created")!.actor;
    expect(admin).toMatch(/\S/);
    for (const e of entries) {
      expect(e.id).toMatch(/\S/);
      expect(new Date(e.at).toISOString()).toBe(e.at);
      expect(e.cursor).toBe(`${e.at}#${e.id}`);
      expect(e.actor).toMatch(/\S/);
    }
    const name = (n: string) => (d: Record<string, unknown>) => d.name === n;
    const lease = (id: string) => (d: Record<string, unknown>) => d.leaseId === id;
    // [type, actor, has config, entry, detail]
    const expected: Array<[EventType, string, boolean, Entry, Record<string, unknown>]> = [
      ["project.created", admin, false, one("project.created"), { name: project }],
      ["config.created", admin, true, one("config.created"), { name: config }],
      ["secrets.changed", admin, true, one("secrets.changed"), { names: ["STATIC_ONE"], deleted: [] }],
      ["token.created", admin, true, one("token.created", (d) => d.id === ids.token), { id: ids.token, kind: "service", access: "read" }],
      ["token.revoked", admin, true, one("token.revoked"), { id: ids.token }],
      ["rotation.created", admin, true, one("rotation.created", name("ROT")), { name: "ROT", provider: "postgres" }],
      ["rotation.succeeded", "rotor:rotation", true, one("rotation.succeeded", name("ROT")), { name: "ROT", activeUsername: "rot_b", flipCount: 1, nextFlipAt: expect.any(String) }],
      ["rotation.failed", "rotor:rotation", true, one("rotation.failed", (d) => d.name === "DOWN" && d.failureCount === 1), { name: "DOWN", failureCount: 1, error: expect.any(String), message: expect.any(String) }],
      ["rotation.paused", "rotor:rotation", true, one("rotation.paused", name("EXT")), { name: "EXT", reason: expect.stringContaining("changed outside Rotor") }],
      ["rotation.resumed", admin, true, one("rotation.resumed", name("EXT")), { name: "EXT", newValues: 1 }],
      ["rotation.deleted", admin, true, one("rotation.deleted", name("EXT")), { name: "EXT" }],
      ["dynamic.created", admin, true, one("dynamic.created", name("DYN")), { name: "DYN", provider: "postgres" }],
      ["dynamic.deleted", admin, true, one("dynamic.deleted", name("DYN")), { name: "DYN" }],
      ["lease.created", admin, true, one("lease.created", lease(ids.lease)), { leaseId: ids.lease, dynamic: "DYN", provider: "postgres", username: expect.stringMatching(/^rotor_/), expiresAt: expect.any(String) }],
      ["lease.renewed", admin, true, one("lease.renewed", lease(ids.lease)), { leaseId: ids.lease, expiresAt: expect.any(String), clamped: false }],
      ["lease.revoked", admin, true, one("lease.revoked", lease(ids.lease)), { leaseId: ids.lease, dynamic: "DYN", outcome: expect.any(String) }],
      ["lease.stuck", "rotor:lease", true, one("lease.stuck", lease(ids.stuck)), { leaseId: ids.stuck, dynamic: "FLAKY", failures: 2, error: expect.any(String) }],
      ["webhook.created", admin, false, one("webhook.created", (d) => d.id === ids.webhook), { id: ids.webhook, origin: new URL(receiverUrl).origin, events: [] }],
      ["webhook.deleted", admin, false, one("webhook.deleted", (d) => d.id === ids.webhook), { id: ids.webhook, origin: new URL(receiverUrl).origin, events: [] }],
    ];
    expect(expected.map(([t]) => t).sort()).toEqual([...EVENT_TYPES].sort());
    for (const [type, actor, hasConfig, entry, detail] of expected) {
      expect(entry.actor, type).toBe(actor);
      expect(entry.project, type).toBe(project);
      if (hasConfig) expect(entry.config, type).toBe(config);
      else expect(entry.config, type).toBeUndefined();
      expect(entry.detail, type).toEqual(detail);
    }
  });

  it("no password, token value, webhook secret or lease password is in any entry, event or webhook delivery", async () => {
    await waitFor("the webhook deliveries", () => received.length > 0, 10_000);
    const secrets = new Set([...env.passwords, ...seen]);
    // The test did see leases, flips, the outside password and tokens: an empty set would prove nothing.
    expect(secrets.size).toBeGreaterThan(10);
    const haystacks = { activity: JSON.stringify(entries), events: JSON.stringify(env.events), webhooks: received.join("\n") };
    const found: string[] = [];
    for (const s of secrets) for (const [where, text] of Object.entries(haystacks)) if (s.length >= 6 && text.includes(s)) found.push(`${s.slice(0, 4)}… in ${where}`);
    expect(found).toEqual([]);
  });
});
