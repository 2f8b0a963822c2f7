/**
 * Webhooks against a real local HTTP receiver (node:http) and an embedded Rotor with short
 * retry waits; the real `rotor` CLI for the commands; a real PostgreSQL rotation for
 * rotation.succeeded.
 */
import { createHmac } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { RotorEvent } from "../../core/events.ts";
import { verifyRotorSignature } from "../../core/webhooks/signature.ts";
import { deliverEvent } from "../../functions/webhooks/deliver.ts";
import { startEmbedded, type Embedded } from "../../local/runtime.ts";
import { REPO_ROOT, apiRequest, readAdminToken, runCli, tempDir, type ApiOptions } from "../support/embedded.ts";
import { engines, startRotationEnv, waitFor, type RotationEnv } from "../support/rotation.ts";

// ---------------------------------------------------------------------------------------------
// The receiver: each path behaves as a test sets it; every request is kept.

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  answered: boolean;
}
type Behaviour = (n: number) => number | "hold";

interface Receiver {
  url: string;
  requests: Received[];
  on(path: string, behaviour: Behaviour): string;
  at(path: string): Received[];
  /** Answers every held request with 200. */
  release(): void;
  stop(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const requests: Received[] = [];
  const behaviours = new Map<string, Behaviour>();
  const held = new Set<() => void>();
  const server: Server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (s: string) => (body += s));
    req.on("end", () => {
      const path = req.url ?? "/";
      const rec: Received = { path, headers: req.headers, body, answered: false };
      requests.push(rec);
      const n = requests.filter((r) => r.path === path).length;
      const outcome = (behaviours.get(path) ?? (() => 200))(n);
      const answer = (status: number) => {
        rec.answered = true;
        if (!res.writableEnded) res.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "ok" : "nope");
      };
      if (outcome !== "hold") return answer(outcome);
      // A slow receiver: answers after 10 s, or when the test releases it.
      const timer = setTimeout(() => done(), 10_000);
      const done = () => {
        clearTimeout(timer);
        held.delete(done);
        answer(200);
      };
      held.add(done);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    on(path, behaviour) {
      behaviours.set(path, behaviour);
      return url + path;
    },
    at: (path) => requests.filter((r) => r.path === path),
    release: () => [...held].forEach((d) => d()),
    async stop() {
      [...held].forEach((d) => d());
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ---------------------------------------------------------------------------------------------

const POLICY = { maxAttempts: 3, backoffBaseMs: 20, backoffCapMs: 80, timeoutMs: 30_000 };
const SECRET_VALUES = { DB_PASSWORD: "hook-value-s3cret-1", API_KEY: "hook-value-k3y-2" };

let receiver: Receiver;
let rotor: Embedded;
let dataDir: string;
let admin: string;
let service: string;

const call = <T = any>(method: string, path: string, opts: ApiOptions = {}) => apiRequest<T>(rotor.url, method, path, { token: admin, ...opts });
async function ok<T = any>(method: string, path: string, opts: ApiOptions = {}): Promise<T> {
  const res = await call<T>(method, path, opts);
  if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json;
}
const addHook = (body: Record<string, unknown>) => ok<{ webhook: { id: string; url: string; events: string[]; config?: string }; secret: string }>("POST", "/v3/webhooks", { body: { project: "shop", ...body } });
const setSecrets = (config: string, secrets: Record<string, string | null>, project = "shop") => ok("POST", "/v3/configs/config/secrets", { body: { project, config, secrets } });
const deliveries = (id: string) => ok<{ deliveries: Array<Record<string, any>> }>("GET", `/v3/webhooks/${id}/deliveries`, { query: { limit: 500 } }).then((r) => r.deliveries);
const cliEnv = () => ({ ROTOR_API_URL: rotor.url, ROTOR_TOKEN: admin });

beforeAll(async () => {
  receiver = await startReceiver();
  dataDir = tempDir("rotor-webhooks-");
  rotor = await startEmbedded({ dataDir, port: 0, log: () => {}, webhooks: { policy: POLICY } });
  admin = readAdminToken(dataDir);
  await ok("POST", "/v3/projects", { body: { name: "shop" } });
  await ok("POST", "/v3/projects", { body: { name: "other" } });
  for (const name of ["dev", "prod"]) await ok("POST", "/v3/configs", { body: { project: "shop", name } });
  await ok("POST", "/v3/configs", { body: { project: "other", name: "dev" } });
  service = (await ok("POST", "/v3/tokens", { body: { project: "shop", config: "dev", access: "read/write" } })).token;
});

// Each test starts with no webhooks and nothing in flight, so deliveries never cross tests.
afterEach(async () => {
  receiver.release();
  for (const w of (await ok("GET", "/v3/webhooks")).webhooks) await ok("DELETE", `/v3/webhooks/${w.id}`);
  await waitFor("the dispatcher to settle", () => rotor.webhooks.idle);
});

afterAll(async () => {
  await rotor?.stop();
  await receiver?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe("deliveries", () => {
  it("signs each delivery as documented: HMAC-SHA256(secret, timestamp + '.' + body)", async () => {
    const { webhook, secret } = await addHook({ url: receiver.on("/sig", () => 200), events: ["secrets.changed"], config: "dev" });
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{40,}$/);
    await setSecrets("dev", SECRET_VALUES);
    const [req] = await waitFor("the signed delivery", () => receiver.at("/sig").length > 0 && receiver.at("/sig"));
    const ts = req.headers["x-rotor-timestamp"] as string;
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.headers["x-rotor-event"]).toBe("secrets.changed");
    expect(req.headers["x-rotor-delivery"]).toMatch(/^dlv_[0-9a-f]{24}$/);
    expect(ts).toMatch(/^\d{10}$/);
    // The scheme, computed here from its description rather than with Rotor's own helper.
    const mac = createHmac("sha256", secret).update(`${ts}.${req.body}`).digest("hex");
    expect(req.headers["x-rotor-signature"]).toBe(`t=${ts},v1=${mac}`);
    // The helper users copy accepts it, and refuses a wrong secret, a changed body, a replay.
    const header = req.headers["x-rotor-signature"] as string;
    expect(verifyRotorSignature({ secret, body: req.body, header })).toBe(true);
    expect(verifyRotorSignature({ secret: secret + "x", body: req.body, header })).toBe(false);
    expect(verifyRotorSignature({ secret, body: req.body.replace("dev", "prod"), header })).toBe(false);
    expect(verifyRotorSignature({ secret, body: req.body, header, nowSec: Number(ts) + 301 })).toBe(false);
    expect(verifyRotorSignature({ secret, body: req.body, header: "v1=" + mac })).toBe(false);
    // The body is the RotorEvent that is also in the activity log, without any value.
    const event = JSON.parse(req.body) as RotorEvent;
    expect(event).toMatchObject({ type: "secrets.changed", project: "shop", config: "dev", detail: { names: expect.arrayContaining(["API_KEY", "DB_PASSWORD"]) } });
    const { activity } = await ok("GET", "/v3/activity", { query: { project: "shop", limit: 10 } });
    expect(activity.map((a: { id: string }) => a.id)).toContain(event.id);
    for (const v of Object.values(SECRET_VALUES)) expect(req.body).not.toContain(v);
    // The log records it, never the secret.
    const log = await deliveries(webhook.id);
    expect(log).toEqual([expect.objectContaining({ deliveryId: req.headers["x-rotor-delivery"], eventId: event.id, eventType: "secrets.changed", attempt: 1, status: "delivered", httpStatus: 200 })]);
    expect(JSON.stringify(log)).not.toContain(secret);
  });

  it("retries after 500s with the same delivery id, then succeeds", async () => {
    const { webhook, secret } = await addHook({ url: receiver.on("/flaky", (n) => (n <= 2 ? 500 : 200)), events: ["secrets.changed"] });
    await setSecrets("prod", { FLAKY: "hook-value-flaky" });
    const log = await waitFor("the third attempt", async () => {
      const l = await deliveries(webhook.id);
      return l.some((a) => a.status === "delivered") && l;
    });
    expect(log.map((a) => [a.attempt, a.status, a.httpStatus])).toEqual([
      [3, "delivered", 200],
      [2, "failed", 500],
      [1, "failed", 500],
    ]);
    expect(new Set(log.map((a) => a.deliveryId)).size).toBe(1);
    expect(log[1].error).toBe("HTTP 500");
    expect(log[1].nextAttemptAt > log[1].at).toBe(true);
    const reqs = receiver.at("/flaky");
    expect(reqs).toHaveLength(3);
    expect(new Set(reqs.map((r) => r.headers["x-rotor-delivery"])).size).toBe(1);
    // Each attempt is signed afresh and verifies.
    for (const r of reqs) expect(verifyRotorSignature({ secret, body: r.body, header: r.headers["x-rotor-signature"] as string })).toBe(true);
    expect(JSON.stringify(log)).not.toContain("hook-value");
  });

  it("gives up after the attempt limit and records it", async () => {
    const { webhook, secret } = await addHook({ url: receiver.on("/down", () => 503), events: ["secrets.*"], config: "prod" });
    await setSecrets("prod", { DOWN: "hook-value-down" });
    const log = await waitFor("giving up", async () => {
      const l = await deliveries(webhook.id);
      return l.some((a) => a.status === "gave_up") && l;
    });
    await waitFor("the dispatcher to settle", () => rotor.webhooks.idle);
    expect(log.map((a) => [a.attempt, a.status, a.httpStatus, a.error])).toEqual([
      [3, "gave_up", 503, "HTTP 503"],
      [2, "failed", 503, "HTTP 503"],
      [1, "failed", 503, "HTTP 503"],
    ]);
    expect(log[0].nextAttemptAt).toBeUndefined();
    expect(receiver.at("/down")).toHaveLength(POLICY.maxAttempts);
    expect(JSON.stringify(log)).not.toContain(secret);
  });

  it("records a receiver that cannot be reached", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const { webhook } = await addHook({ url: `http://127.0.0.1:${port}/gone`, events: ["config.created"] });
    await ok("POST", "/v3/configs", { body: { project: "shop", name: "unreachable" } });
    const log = await waitFor("giving up", async () => {
      const l = await deliveries(webhook.id);
      return l.some((a) => a.status === "gave_up") && l;
    });
    expect(log).toHaveLength(3);
    for (const a of log) {
      expect(a.httpStatus).toBeUndefined();
      expect(a.error).toBe("ECONNREFUSED");
    }
    await ok("DELETE", `/v3/webhooks/${webhook.id}`);
  });

  it("a slow receiver blocks neither the change, nor the API answer, nor other webhooks", async () => {
    const slow = await addHook({ url: receiver.on("/slow", () => "hold"), events: ["secrets.changed"], config: "dev" });
    await addHook({ url: receiver.on("/fast", () => 200), events: ["secrets.changed"], config: "dev" });
    const res = await apiRequest(rotor.url, "POST", "/v3/configs/config/secrets", { token: service, body: { project: "shop", config: "dev", secrets: { SLOW: "hook-value-slow" } } });
    expect(res.status).toBe(200);
    // The receiver may or may not have seen the request yet, but it has answered nothing.
    expect(receiver.at("/slow").every((r) => !r.answered)).toBe(true);
    const download = await ok("GET", "/v3/configs/config/secrets/download", { query: { project: "shop", config: "dev" } });
    expect(download.SLOW).toBe("hook-value-slow");
    await waitFor("the fast webhook", () => receiver.at("/fast").length === 1);
    await waitFor("the slow webhook's request", () => receiver.at("/slow").length === 1);
    expect(receiver.at("/slow")[0].answered).toBe(false);
    expect(await deliveries(slow.webhook.id)).toEqual([]);
    receiver.release();
    await waitFor("the slow delivery", async () => (await deliveries(slow.webhook.id)).some((a) => a.status === "delivered"));
  });

  it("sends each webhook only its events and its config", async () => {
    const onlyRotation = await addHook({ url: receiver.on("/f-rotation", () => 200), events: ["rotation.succeeded"] });
    const onlyProd = await addHook({ url: receiver.on("/f-prod", () => 200), config: "prod" });
    const devSecrets = await addHook({ url: receiver.on("/f-dev-secrets", () => 200), events: ["secrets.*"], config: "dev" });
    const all = await addHook({ url: receiver.on("/f-all", () => 200) });
    const otherProject = await addHook({ project: "other", url: receiver.on("/f-other", () => 200) });
    await setSecrets("dev", { FILTER: "hook-value-f1" });
    await setSecrets("prod", { FILTER: "hook-value-f2" });
    await ok("POST", "/v3/configs", { body: { project: "shop", name: "staging" } });
    await ok("POST", "/v3/tokens", { body: { project: "shop", config: "prod", access: "read" } });
    // webhook.* events (the webhooks' own creation) are left out: they are not what this test is about.
    const seen = (path: string) =>
      receiver
        .at(path)
        .map((r) => JSON.parse(r.body) as RotorEvent)
        .filter((e) => !e.type.startsWith("webhook."))
        .map((e) => `${e.type}@${e.config}`);
    await waitFor("the catch-all webhook", () => seen("/f-all").length === 4);
    await waitFor("the dispatcher to settle", () => rotor.webhooks.idle);
    // Events are delivered concurrently, so arrival order is not asserted.
    expect(seen("/f-all").sort()).toEqual(["config.created@staging", "secrets.changed@dev", "secrets.changed@prod", "token.created@prod"]);
    expect(seen("/f-rotation")).toEqual([]);
    expect(seen("/f-prod").sort()).toEqual(["secrets.changed@prod", "token.created@prod"]);
    expect(seen("/f-dev-secrets")).toEqual(["secrets.changed@dev"]);
    expect(seen("/f-other")).toEqual([]);
    expect([onlyRotation, onlyProd, devSecrets, all, otherProject].map((h) => h.webhook.config)).toEqual([undefined, "prod", "dev", undefined, undefined]);
  });

  it("the cloud handler delivers an EventBridge event to the matching webhooks", async () => {
    const { webhook, secret } = await addHook({ url: receiver.on("/lambda", () => 200), events: ["rotation.succeeded"], config: "prod" });
    const event: RotorEvent = { id: "flip-test-1", type: "rotation.succeeded", at: new Date().toISOString(), actor: "rotor:rotation", project: "shop", config: "prod", detail: { name: "DB" } };
    const bridge = { version: "0", id: "e-1", "detail-type": event.type, source: "rotor", account: "123456789012", time: event.at, region: "eu-west-1", resources: [], detail: event };
    const out = await deliverEvent(rotor.deps, bridge, POLICY);
    expect(out).toEqual({ eventId: event.id, deliveries: [{ webhookId: webhook.id, status: "delivered", attempts: 1 }] });
    const [req] = receiver.at("/lambda");
    expect(JSON.parse(req.body)).toEqual(event);
    expect(verifyRotorSignature({ secret, body: req.body, header: req.headers["x-rotor-signature"] as string })).toBe(true);
    // An event of another config goes nowhere; a malformed one is refused.
    expect((await deliverEvent(rotor.deps, { ...bridge, detail: { ...event, id: "flip-test-2", config: "dev" } }, POLICY)).deliveries).toEqual([]);
    await expect(deliverEvent(rotor.deps, { source: "rotor", "detail-type": "x", detail: { id: 1 } }, POLICY)).rejects.toThrow();
    await ok("DELETE", `/v3/webhooks/${webhook.id}`);
  });
});

describe("docs", () => {
  it("docs/events.md carries the verify helper exactly as tested here", () => {
    const src = readFileSync(join(REPO_ROOT, "core/webhooks/signature.ts"), "utf8");
    const doc = readFileSync(join(REPO_ROOT, "docs/events.md"), "utf8");
    const fn = (text: string) => {
      const start = text.indexOf("export function verifyRotorSignature");
      const body = text.slice(start, text.indexOf("\n}\n", start) + 2);
      // Comments may differ (the doc explains in prose); the code may not.
      return body.split("\n").filter((l) => !l.trim().startsWith("//")).join("\n");
    };
    expect(fn(src).length).toBeGreaterThan(200);
    expect(fn(doc)).toBe(fn(src));
  });
});

describe("API", () => {
  it("lists webhooks without their secrets and removes them with their log", async () => {
    const { webhook, secret } = await addHook({ url: receiver.on("/listed", () => 200), events: ["token.revoked", "rotation.*"], config: "dev" });
    const { webhooks } = await ok("GET", "/v3/webhooks", { query: { project: "shop" } });
    expect(webhooks.find((w: { id: string }) => w.id === webhook.id)).toMatchObject({ project: "shop", url: receiver.url + "/listed", events: ["token.revoked", "rotation.*"], config: "dev" });
    expect((await ok("GET", "/v3/webhooks", { query: { project: "other" } })).webhooks.some((w: { id: string }) => w.id === webhook.id)).toBe(false);
    const everything = await call("GET", "/v3/webhooks");
    expect(everything.text).not.toContain(secret);
    expect(everything.text).not.toContain("sealed");
    expect(await ok("DELETE", `/v3/webhooks/${webhook.id}`)).toEqual({ deleted: true });
    // Adding and removing are activity too, with the URL's origin only.
    const { activity } = await ok("GET", "/v3/activity", { query: { project: "shop", limit: 20 } });
    const mine = activity.filter((a: RotorEvent) => a.detail.id === webhook.id);
    expect(mine.map((a: RotorEvent) => [a.type, a.config, a.actor.startsWith("admin:")])).toEqual([
      ["webhook.deleted", "dev", true],
      ["webhook.created", "dev", true],
    ]);
    expect(mine[1].detail).toEqual({ id: webhook.id, origin: receiver.url, events: ["token.revoked", "rotation.*"] });
    expect(JSON.stringify(mine)).not.toContain("/listed");
    expect((await call("GET", `/v3/webhooks/${webhook.id}/deliveries`)).status).toBe(404);
    expect((await call("DELETE", `/v3/webhooks/${webhook.id}`)).status).toBe(404);
  });

  it("stores the secret sealed, never in clear", async () => {
    const { secret } = await addHook({ url: receiver.on("/sealed", () => 200), events: ["lease.created"] });
    const { ScanCommand } = await import("@aws-sdk/client-dynamodb");
    const out = await rotor.deps.table.client.send(new ScanCommand({ TableName: rotor.deps.table.name }));
    const text = JSON.stringify(out.Items);
    expect(text).not.toContain(secret);
    expect(text).not.toContain(secret.slice("whsec_".length));
  });

  const bad: Array<[string, string, string, ApiOptions | ((id: string) => ApiOptions) | undefined, number, string]> = [
    ["ftp URL", "POST", "/v3/webhooks", { body: { project: "shop", url: "ftp://example.com/x" } }, 400, "invalid_request"],
    ["not a URL", "POST", "/v3/webhooks", { body: { project: "shop", url: "not a url" } }, 400, "invalid_request"],
    ["javascript URL", "POST", "/v3/webhooks", { body: { project: "shop", url: "javascript:alert(1)" } }, 400, "invalid_request"],
    ["credentials in the URL", "POST", "/v3/webhooks", { body: { project: "shop", url: "https://u:p@example.com/" } }, 400, "invalid_request"],
    ["unknown event type", "POST", "/v3/webhooks", { body: { project: "shop", url: "https://example.com/", events: ["secrets.stolen"] } }, 400, "invalid_request"],
    ["unknown event group", "POST", "/v3/webhooks", { body: { project: "shop", url: "https://example.com/", events: ["nope.*"] } }, 400, "invalid_request"],
    ["bad project name", "POST", "/v3/webhooks", { body: { project: "Shop!", url: "https://example.com/" } }, 400, "invalid_request"],
    ["unknown project", "POST", "/v3/webhooks", { body: { project: "ghost", url: "https://example.com/" } }, 404, "not_found"],
    ["unknown config", "POST", "/v3/webhooks", { body: { project: "shop", config: "ghost", url: "https://example.com/" } }, 404, "not_found"],
    ["missing body", "POST", "/v3/webhooks", undefined, 400, "invalid_request"],
    ["unknown id", "DELETE", "/v3/webhooks/wh_nothere", undefined, 404, "not_found"],
    ["unknown id's deliveries", "GET", "/v3/webhooks/wh_nothere/deliveries", undefined, 404, "not_found"],
    ["malformed id", "GET", "/v3/webhooks/nope/deliveries", undefined, 400, "invalid_request"],
    ["bad limit", "GET", "/v3/webhooks/wh_x/deliveries", { query: { limit: 0 } }, 400, "invalid_request"],
    ["list of an unknown project", "GET", "/v3/webhooks", { query: { project: "ghost" } }, 404, "not_found"],
  ];
  it.each(bad)("answers 4xx for %s and changes nothing", async (_name, method, path, opts, status, code) => {
    const before = (await ok("GET", "/v3/webhooks")).webhooks.length;
    const res = await call(method, path, typeof opts === "function" ? opts("") : opts);
    expect(res.status).toBe(status);
    expect(res.json).toEqual({ error: code, message: expect.any(String) });
    expect((await ok("GET", "/v3/webhooks")).webhooks.length).toBe(before);
  });

  it("refuses service tokens and missing tokens", async () => {
    const { webhook } = await addHook({ url: receiver.on("/scoped", () => 200), events: ["lease.revoked"], config: "dev" });
    const attempts: Array<[string, string, ApiOptions]> = [
      ["POST", "/v3/webhooks", { body: { project: "shop", config: "dev", url: "https://example.com/" } }],
      ["GET", "/v3/webhooks", { query: { project: "shop" } }],
      ["DELETE", `/v3/webhooks/${webhook.id}`, {}],
      ["GET", `/v3/webhooks/${webhook.id}/deliveries`, {}],
    ];
    for (const [method, path, opts] of attempts) {
      const res = await apiRequest(rotor.url, method, path, { ...opts, token: service });
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.json.error).toBe("forbidden");
      expect((await apiRequest(rotor.url, method, path, opts)).status).toBe(401);
    }
    expect((await ok("GET", "/v3/webhooks")).webhooks.some((w: { id: string }) => w.id === webhook.id)).toBe(true);
  });
});

describe("CLI", () => {
  it("adds (secret once), lists, shows deliveries and removes through the real binary", async () => {
    const url = receiver.on("/cli", () => 200);
    const added = await runCli(["webhooks", "add", url, "--events", "secrets.changed,token.*", "--project", "shop", "--config", "prod"], { env: cliEnv() });
    expect(added.code, added.stderr).toBe(0);
    const secret = added.stdout.trim();
    expect(secret).toMatch(/^whsec_/);
    const id = /webhook (wh_[A-Za-z0-9]+) for shop \(events: secrets\.changed,token\.\*; configs: prod\)/.exec(added.stderr)?.[1];
    expect(id, added.stderr).toBeDefined();

    const list = await runCli(["webhooks", "list", "--project", "shop"], { env: cliEnv() });
    expect(list.code).toBe(0);
    const row = list.stdout.split("\n").find((l) => l.startsWith(id!));
    expect(row).toMatch(/shop\s+prod\s+secrets\.changed,token\.\*\s+http:\/\/127\.0\.0\.1:\d+\/cli/);
    expect(list.stdout).not.toContain(secret);

    await setSecrets("prod", { CLI_HOOK: "hook-value-cli" });
    await waitFor("the delivery", () => receiver.at("/cli").length === 1);
    await waitFor("its log entry", async () => (await deliveries(id!)).length === 1);
    const log = await runCli(["webhooks", "deliveries", id!], { env: cliEnv() });
    expect(log.code, log.stderr).toBe(0);
    const lines = log.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^at\s+deliveryId\s+eventType\s+attempt\s+status\s+httpStatus\s+durationMs\s+error$/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(new RegExp(`${receiver.at("/cli")[0].headers["x-rotor-delivery"]}\\s+secrets\\.changed\\s+1\\s+delivered\\s+200\\s+\\d+`));
    expect(log.stdout + log.stderr).not.toContain(secret);
    const json = await runCli(["webhooks", "deliveries", id!, "--json"], { env: cliEnv() });
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ webhookId: id, status: "delivered", httpStatus: 200 })]);

    const removed = await runCli(["webhooks", "remove", id!], { env: cliEnv() });
    expect(removed).toMatchObject({ code: 0, stdout: `removed ${id}\n` });
    const gone = await runCli(["webhooks", "deliveries", id!], { env: cliEnv() });
    expect(gone.code).toBe(1);
    expect(gone.stdout).toBe("");
    expect(gone.stderr).toMatch(/^rotor: webhook '.+' does not exist \(not_found\)\n$/);
  });

  it("fails with one line for a bad URL, a bad event, a missing project or a service token", async () => {
    const cases: Array<[string[], Record<string, string>, number, RegExp]> = [
      [["webhooks", "add", "ftp://example.com/", "--project", "shop"], cliEnv(), 1, /http or https/],
      [["webhooks", "add", "https://example.com/", "--project", "shop", "--events", "secrets.lost"], cliEnv(), 1, /unknown event type 'secrets\.lost'/],
      [["webhooks", "add", "https://example.com/", "--project", "shop", "--events", ","], cliEnv(), 2, /--events needs/],
      [["webhooks", "add", "https://example.com/"], cliEnv(), 2, /no project/],
      [["webhooks", "list"], { ROTOR_API_URL: rotor.url, ROTOR_TOKEN: service }, 1, /admin token/],
      [["webhooks", "deliveries", "wh_nothere"], cliEnv(), 1, /does not exist/],
    ];
    const before = (await ok("GET", "/v3/webhooks")).webhooks.length;
    const results = await Promise.all(cases.map(([args, env]) => runCli(args, { env })));
    results.forEach((r, i) => {
      const [args, , code, message] = cases[i];
      expect(r.code, args.join(" ")).toBe(code);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^[^\n]+\n$/);
      expect(r.stderr).toMatch(message);
    });
    expect((await ok("GET", "/v3/webhooks")).webhooks.length).toBe(before);
  });
});

// ---------------------------------------------------------------------------------------------
// A real rotation (PostgreSQL) fires rotation.succeeded, and a slow receiver does not hold it up.

describe("rotation", () => {
  let env: RotationEnv;
  let hooks: Receiver;
  beforeAll(async () => {
    hooks = await startReceiver();
    env = await startRotationEnv(engines[0]);
  });
  afterAll(async () => {
    await env?.stop();
    await hooks?.stop();
  });

  it("fires rotation.succeeded to the project's webhooks so applications can restart; a slow one does not block the flip", async () => {
    const add = async (path: string, behaviour: Behaviour) => {
      const res = await env.api("POST", "/v3/webhooks", { body: { project: env.project, url: hooks.on(path, behaviour), events: ["rotation.succeeded"] } });
      expect(res.status, res.text).toBe(200);
      return res.json as { webhook: { id: string }; secret: string };
    };
    const restart = await add("/restart", () => 200);
    await add("/rot-slow", () => "hold");
    await env.createRotated("DB");
    const { status, served } = await env.flip("DB");
    expect(status).toBe("SUCCEEDED");
    // The flip finished while the slow receiver still held its request (if it got it yet).
    expect(hooks.at("/rot-slow").every((r) => !r.answered)).toBe(true);

    const [req] = await waitFor("the restart webhook", () => hooks.at("/restart").length > 0 && hooks.at("/restart"));
    const event = JSON.parse(req.body) as RotorEvent;
    expect(req.headers["x-rotor-event"]).toBe("rotation.succeeded");
    expect(event).toMatchObject({ type: "rotation.succeeded", project: env.project, config: env.config, actor: "rotor:rotation", detail: { name: "DB", activeUsername: served.username } });
    expect(verifyRotorSignature({ secret: restart.secret, body: req.body, header: req.headers["x-rotor-signature"] as string })).toBe(true);

    // The activity log has the rotation's entries, and no password anywhere in them or the delivery.
    const activity = (await env.api("GET", "/v3/activity", { query: { project: env.project, limit: 100 } })).json.activity as RotorEvent[];
    expect(activity.map((a) => a.type)).toEqual(expect.arrayContaining(["rotation.created", "rotation.succeeded"]));
    expect(activity.find((a) => a.type === "rotation.succeeded")?.id).toBe(event.id);
    const text = JSON.stringify(activity) + req.body;
    for (const p of env.passwords) expect(text).not.toContain(p);
    hooks.release();
  });
});
