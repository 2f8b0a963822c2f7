/**
 * The activity log through an embedded Rotor: one entry per change, no values, paged by
 * key (limit + cursor), scoped to admin tokens; `rotor activity` and `--follow` through the
 * real binary; events published at least once; the cloud bus wiring (EventBridge mocked).
 */
import { EventBridgeClient, PutEventsCommand } from "@aws-sdk/client-eventbridge";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordActivity } from "../../core/activity.ts";
import type { EventBus, RotorEvent } from "../../core/events.ts";
import { cloudDeps, cloudEventBus } from "../../functions/lib/cloud.ts";
import { runCli, spawnCli, startTestServer, waitForOutput, type ApiOptions, type TestServer } from "../support/embedded.ts";

type Entry = RotorEvent & { cursor: string };

let rotor: TestServer;
let serviceToken: string;
const VALUES = ["act-value-postgres://u:pw@db/app", "act-value-k3y", "act-value-rotated"];

async function ok<T = any>(method: string, path: string, opts: ApiOptions = {}): Promise<T> {
  const res = await rotor.api<T>(method, path, { token: rotor.adminToken, ...opts });
  if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
  return res.json;
}
const page = (query: Record<string, string | number | undefined>) => ok<{ activity: Entry[]; next?: string }>("GET", "/v3/activity", { query });
const cliEnv = () => ({ ROTOR_API_URL: rotor.url, ROTOR_TOKEN: rotor.adminToken });

beforeAll(async () => {
  rotor = await startTestServer();
  await ok("POST", "/v3/projects", { body: { name: "shop" } });
  await ok("POST", "/v3/configs", { body: { project: "shop", name: "dev" } });
  await ok("POST", "/v3/configs/config/secrets", { body: { project: "shop", config: "dev", secrets: { DATABASE_URL: VALUES[0], API_KEY: VALUES[1] } } });
  await ok("POST", "/v3/configs/config/secrets", { body: { project: "shop", config: "dev", secrets: { API_KEY: null } } });
  const svc = await ok("POST", "/v3/tokens", { body: { project: "shop", config: "dev", access: "read/write" } });
  serviceToken = svc.token;
  const doomed = await ok("POST", "/v3/tokens", { body: { project: "shop", config: "dev", access: "read" } });
  await ok("DELETE", `/v3/tokens/${doomed.id}`);
  await ok("POST", "/v3/projects", { body: { name: "other" } });
  await ok("POST", "/v3/configs", { body: { project: "other", name: "prod" } });
  // A change made by the service token, so the actor differs.
  const res = await rotor.api("POST", "/v3/configs/config/secrets", { token: serviceToken, body: { project: "shop", config: "dev", secrets: { ROTATED_LIKE: VALUES[2] } } });
  expect(res.status).toBe(200);
});

afterAll(() => rotor?.stop());

describe("entries", () => {
  it("records who, what, when and where for each kind of change, and never a value", async () => {
    const { activity, next } = await page({ limit: 500 });
    expect(next).toBeUndefined();
    const kinds = activity.map((a) => `${a.type}:${a.project ?? ""}/${a.config ?? ""}`).reverse();
    expect(kinds).toEqual([
      "token.created:/", // the bootstrap admin token
      "project.created:shop/",
      "config.created:shop/dev",
      "secrets.changed:shop/dev",
      "secrets.changed:shop/dev",
      "token.created:shop/dev",
      "token.created:shop/dev",
      "token.revoked:shop/dev",
      "project.created:other/",
      "config.created:other/prod",
      "secrets.changed:shop/dev",
    ]);
    const admin = activity.find((a) => a.type === "project.created")!.actor;
    expect(admin).toMatch(/^admin:tok_/);
    expect(activity[0].actor).toMatch(/^service:tok_/);
    expect(activity[0].detail).toEqual({ names: ["ROTATED_LIKE"], deleted: [] });
    expect(activity.find((a) => a.type === "secrets.changed" && (a.detail.deleted as string[]).length)?.detail).toEqual({ names: ["API_KEY"], deleted: ["API_KEY"] });
    for (const a of activity) {
      expect(Date.parse(a.at)).not.toBeNaN();
      expect(a.cursor).toBe(`${a.at}#${a.id}`);
    }
    const text = JSON.stringify(activity);
    for (const v of VALUES) expect(text).not.toContain(v);
    expect(text).not.toContain(serviceToken);
    expect(text).not.toContain(rotor.adminToken);
  });

  it("stores no value in any activity item or event", async () => {
    const published: RotorEvent[] = [];
    rotor.embedded.bus.subscribe((e) => void published.push(e));
    await ok("POST", "/v3/configs/config/secrets", { body: { project: "other", config: "prod", secrets: { LATE: "act-value-late" } } });
    const out = await rotor.embedded.deps.table.client.send(new ScanCommand({ TableName: rotor.embedded.deps.table.name, ConsistentRead: true }));
    const activityItems = (out.Items ?? []).filter((i) => i.kind?.S === "activity" || i.pk.S!.startsWith("ACTIVITY"));
    expect(activityItems.length).toBeGreaterThan(10);
    const text = JSON.stringify(activityItems) + JSON.stringify(published);
    for (const v of [...VALUES, "act-value-late"]) expect(text).not.toContain(v);
    expect(published.map((e) => e.type)).toEqual(["secrets.changed"]);
  });
});

describe("paging", () => {
  it("pages newest first with limit and cursor until exhausted, by key", async () => {
    const all = (await page({ limit: 500 })).activity;
    expect(all.length).toBeGreaterThan(7);
    for (let i = 1; i < all.length; i++) expect(all[i - 1].cursor > all[i].cursor).toBe(true);
    const seen: Entry[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const p = await page({ limit: 3, cursor });
      expect(p.activity.length).toBeLessThanOrEqual(3);
      seen.push(...p.activity);
      cursor = p.next;
      if (cursor) expect(cursor).toBe(p.activity[2].cursor);
      pages++;
    } while (cursor);
    expect(pages).toBe(Math.ceil(all.length / 3));
    expect(seen.map((e) => e.id)).toEqual(all.map((e) => e.id));
    // `before` is the older name of the same cursor.
    expect((await page({ limit: 2, before: all[1].cursor })).activity.map((e) => e.id)).toEqual(all.slice(2, 4).map((e) => e.id));
  });

  it("pages one project's entries from its own key range", async () => {
    const all = (await page({ limit: 500 })).activity.filter((a) => a.project === "shop");
    const seen: Entry[] = [];
    let cursor: string | undefined;
    do {
      const p = await page({ project: "shop", limit: 2, cursor });
      seen.push(...p.activity);
      cursor = p.next;
    } while (cursor);
    expect(seen.map((e) => e.id)).toEqual(all.map((e) => e.id));
    // The project's copies exist under their own partition: the filter is a key, not a scan.
    const out = await rotor.embedded.deps.table.client.send(new ScanCommand({ TableName: rotor.embedded.deps.table.name, ConsistentRead: true }));
    expect((out.Items ?? []).filter((i) => i.pk.S === "ACTIVITY#shop").length).toBe(all.length);
    expect((await page({ project: "other", limit: 500 })).activity.every((a) => a.project === "other")).toBe(true);
  });

  it("refuses bad input and service tokens with a 4xx", async () => {
    const cases: Array<[Record<string, string | number>, string | undefined, number, string]> = [
      [{ limit: 0 }, rotor.adminToken, 400, "invalid_request"],
      [{ limit: 501 }, rotor.adminToken, 400, "invalid_request"],
      [{ limit: "ten" }, rotor.adminToken, 400, "invalid_request"],
      [{ cursor: "not-a-cursor" }, rotor.adminToken, 400, "invalid_request"],
      [{ cursor: "2026-01-01T00:00:00.000Z#a", before: "2026-01-01T00:00:00.000Z#b" }, rotor.adminToken, 400, "invalid_request"],
      [{ project: "Shop!" }, rotor.adminToken, 400, "invalid_request"],
      [{ project: "ghost" }, rotor.adminToken, 404, "not_found"],
      [{ project: "shop" }, serviceToken, 403, "forbidden"],
      [{}, serviceToken, 403, "forbidden"],
      [{}, undefined, 401, "unauthorized"],
    ];
    for (const [query, token, status, code] of cases) {
      const res = await rotor.api("GET", "/v3/activity", { token, query });
      expect(res.status, JSON.stringify(query)).toBe(status);
      expect(res.json).toEqual({ error: code, message: expect.any(String) });
    }
  });
});

describe("publishing", () => {
  // With `at` (the time the change stored) the marker and entries go in together; without
  // it, the marker goes first and fixes the key. Both must give one entry and one publish.
  it.each([
    ["the recording time", undefined],
    ["the change's stored time", "2026-11-01T10:00:00.000Z"],
  ])("publishes each entry at least once, keyed by %s: a failed publish is retried by re-recording the change, then never repeated", async (_, at) => {
    const { deps } = rotor.embedded;
    const published: RotorEvent[] = [];
    let fail = true;
    const flaky: EventBus = {
      publish: async (e) => {
        if (fail) throw new Error("bus down");
        published.push(e);
      },
    };
    const changeId = `flip-at-least-once-${at ?? "now"}`;
    const entry = { type: "rotation.succeeded" as const, actor: "rotor:rotation", project: "other", config: "prod", changeId, at, detail: { name: "DB" } };
    await expect(recordActivity({ ...deps, events: flaky }, entry)).rejects.toThrow("bus down");
    fail = false;
    const first = await recordActivity({ ...deps, events: flaky }, entry);
    const again = await recordActivity({ ...deps, events: flaky }, entry);
    expect(published).toEqual([first]);
    expect(again).toEqual(first);
    if (at) expect(first.at).toBe(at);
    const entries = (await page({ project: "other", limit: 500 })).activity.filter((a) => a.id === changeId);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ type: "rotation.succeeded", at: first.at, detail: { name: "DB" } });
    const all = (await page({ limit: 500 })).activity.filter((a) => a.id === changeId);
    expect(all).toHaveLength(1);
  });

  it("cloud: publishes to the EventBridge bus named by ROTOR_EVENT_BUS, and refuses to drop events without it", async () => {
    const eb = mockClient(EventBridgeClient);
    eb.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: "1" }] });
    const vars = { ROTOR_TABLE: "rotor-table", ROTOR_KMS_KEY_ID: "alias/rotor", ROTOR_EVENT_BUS: "rotor-bus", AWS_REGION: "eu-west-1" };
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    try {
      Object.assign(process.env, vars);
      const deps = await cloudDeps();
      const event: RotorEvent = { id: "evt_1", type: "rotation.succeeded", at: "2026-01-01T00:00:00.000Z", actor: "rotor:rotation", project: "shop", config: "prod", detail: { name: "DB" } };
      await deps.events.publish(event);
      expect(eb.commandCalls(PutEventsCommand).map((c) => c.args[0].input)).toEqual([
        { Entries: [{ Source: "rotor", DetailType: "rotation.succeeded", Detail: JSON.stringify(event), EventBusName: "rotor-bus" }] },
      ]);
      await expect(cloudEventBus({}).publish(event)).rejects.toThrow(/ROTOR_EVENT_BUS/);
      expect(eb.commandCalls(PutEventsCommand)).toHaveLength(1);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      eb.restore();
    }
  });
});

describe("CLI", () => {
  it("rotor activity prints the latest entries, oldest first, filtered by project", async () => {
    const latest = (await page({ project: "shop", limit: 3 })).activity;
    const r = await runCli(["activity", "--project", "shop", "--limit", "3"], { env: cliEnv() });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(3);
    [...latest].reverse().forEach((e, i) => {
      expect(lines[i].startsWith(`${e.at}  ${e.type}`)).toBe(true);
      expect(lines[i]).toContain(e.actor);
      expect(lines[i]).toContain(`shop/${e.config ?? ""}`.replace(/\/$/, ""));
    });
    const json = await runCli(["activity", "--limit", "500", "--json"], { env: cliEnv() });
    const parsed = json.stdout.trim().split("\n").map((l) => JSON.parse(l) as Entry);
    expect(parsed.map((e) => e.id)).toEqual((await page({ limit: 500 })).activity.map((e) => e.id).reverse());
    for (const v of VALUES) expect(r.stdout + json.stdout).not.toContain(v);
  });

  it("fails with one line on bad input", async () => {
    const cases: Array<[string[], Record<string, string>, number, RegExp]> = [
      [["activity", "--limit", "0"], cliEnv(), 2, /--limit must be a whole number/],
      [["activity", "--interval", "soon", "--follow"], cliEnv(), 2, /--interval/],
      [["activity", "--project", "ghost"], cliEnv(), 1, /project 'ghost' does not exist/],
      [["activity"], { ROTOR_API_URL: rotor.url, ROTOR_TOKEN: serviceToken }, 1, /admin token/],
    ];
    const results = await Promise.all(cases.map(([args, env]) => runCli(args, { env })));
    results.forEach((r, i) => {
      expect(r.code, cases[i][0].join(" ")).toBe(cases[i][2]);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^rotor: [^\n]+\n$/);
      expect(r.stderr).toMatch(cases[i][3]);
    });
  });

  it("--follow prints new entries as they happen, each once, and exits cleanly on SIGINT", async () => {
    const proc = spawnCli(["activity", "--project", "shop", "--limit", "1", "--follow", "--interval", "1", "--json"], { env: cliEnv(), timeoutMs: 60_000 });
    try {
      await waitForOutput(proc, ({ stdout }) => stdout.split("\n").filter(Boolean).length >= 1);
      const before = (await page({ project: "shop", limit: 1 })).activity[0];
      expect(JSON.parse(proc.stdout.split("\n")[0]).id).toBe(before.id);
      await ok("POST", "/v3/configs", { body: { project: "shop", name: "follow1" } });
      await ok("POST", "/v3/configs", { body: { project: "other", name: "follow-elsewhere" } });
      await ok("POST", "/v3/configs/config/secrets", { body: { project: "shop", config: "follow1", secrets: { FOLLOWED: "act-value-followed" } } });
      await waitForOutput(proc, ({ stdout }) => stdout.includes("secrets.changed") && stdout.includes('"follow1"'));
      await ok("POST", "/v3/configs", { body: { project: "shop", name: "follow2" } });
      await waitForOutput(proc, ({ stdout }) => stdout.includes('"follow2"'));
      // Give --follow two more polls to print anything twice, if it would.
      const printed = proc.stdout;
      await new Promise((r) => setTimeout(r, 2_500));
      expect(proc.stdout).toBe(printed);
      proc.child.kill("SIGINT");
      const result = await proc.done;
      expect(result.code).toBe(0);
      expect(result.stderr).toBe("");
      const entries = result.stdout.trim().split("\n").map((l) => JSON.parse(l) as Entry);
      expect(entries.map((e) => `${e.type}:${e.config ?? ""}`)).toEqual([`${before.type}:${before.config ?? ""}`, "config.created:follow1", "secrets.changed:follow1", "config.created:follow2"]);
      expect(new Set(entries.map((e) => e.id)).size).toBe(entries.length);
      expect(result.stdout).not.toContain("act-value-followed");
    } finally {
      proc.child.kill("SIGKILL");
    }
  });
});
