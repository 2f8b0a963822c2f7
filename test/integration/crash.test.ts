import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SimulatedCrash } from "../../core/adapters/local/step-functions.ts";
import { loadRotated, openInstance, sealBinding, type SecretRef } from "../../core/rotation/model.ts";
import { rescueStalledFlips } from "../../core/rotation/rescue.ts";
import { startEmbedded, type Embedded } from "../../local/runtime.ts";
import { startMariaDb } from "../support/mariadb.ts";
import { startPostgres, type DbServer } from "../support/postgres.ts";

/**
 * Crash safety (DESIGN.md "Rotation"): stop the workflow before and after each of the four
 * steps — including after the database write and before the store write — then run it
 * again. It must converge, and at every moment each user's password in the database must
 * be a value Rotor has stored for that user.
 */
const engines = [
  { name: "postgres", provider: "postgres", start: startPostgres, grant: (u: string) => `ALTER ROLE "${u}" CREATEROLE` },
  { name: "mariadb", provider: "mysql", start: startMariaDb, grant: (u: string) => `GRANT CREATE USER ON *.* TO '${u}'@'%'` },
] as const;

const ref: SecretRef = { project: "crash", config: "prod", name: "DB" };
const STEPS = ["CreateSecret", "SetSecret", "TestSecret", "FinishSecret"] as const;

describe.each(engines)("crash safety on $name", (engine) => {
  let db: DbServer;
  let rotor: Embedded;
  let dataDir: string;
  let token: string;
  let crashAt: { state: string; phase: "before" | "after" } | undefined;
  const invariantViolations: string[] = [];

  /** Every value Rotor holds for each user (current, previous, in-flight pending). */
  async function storedValues(): Promise<Record<string, string[]>> {
    const item = await loadRotated(rotor.deps, ref);
    const out: Record<string, string[]> = {};
    for (const slot of [0, 1] as const) {
      const values = [await openInstance(rotor.deps, item, slot, "current"), await openInstance(rotor.deps, item, slot, "previous")];
      if (item.flip?.target === slot) values.push(await rotor.deps.envelope.open(item.flip.pending, sealBinding(ref, slot, item.flip.pendingVersion)));
      out[item.instances[slot].username] = values.filter((v): v is string => !!v);
    }
    return out;
  }

  /** The database holds, for each user, one of the values Rotor stored for it. */
  async function checkInvariant(where: string) {
    for (const [username, values] of Object.entries(await storedValues())) {
      const logins = await Promise.all(values.map((v) => db.canLogin(username, v)));
      if (!logins.some(Boolean)) invariantViolations.push(`${where}: ${username} holds no stored value`);
    }
  }

  async function api(method: string, path: string, body?: unknown) {
    const res = await fetch(rotor.url + path, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, json: (await res.json()) as any };
  }

  async function servedLogsIn() {
    const { json } = await api("GET", `/v3/configs/config/secrets/download?project=${ref.project}&config=${ref.config}`);
    return db.canLogin(json.DB_USERNAME, json.DB_PASSWORD);
  }

  beforeAll(async () => {
    db = await engine.start();
    await db.createLoginUser("rotor_admin", "AdminPassw0rd");
    await db.query(engine.grant("rotor_admin"));
    await db.createLoginUser("app_a", "FirstPassA1");
    await db.createLoginUser("app_b", "FirstPassB1");
    dataDir = mkdtempSync(join(tmpdir(), "rotor-crash-"));
    rotor = await startEmbedded({
      dataDir,
      port: 0,
      log: () => {},
      rotation: {
        waitMs: 5,
        retryMs: 5,
        pollIntervalMs: 3_600_000, // ticks are driven by the test
        onTask: async (state, phase) => {
          await checkInvariant(`${phase} ${state}`);
          if (crashAt && crashAt.state === state && crashAt.phase === phase) throw new SimulatedCrash(`${phase} ${state}`);
        },
      },
    });
    token = readFileSync(rotor.adminTokenPath, "utf8").trim();
    await api("POST", "/v3/projects", { name: ref.project });
    await api("POST", "/v3/configs", { project: ref.project, name: ref.config });
    const created = await api("POST", "/v3/configs/config/rotated_secrets", {
      ...ref,
      provider: engine.provider,
      connection: { host: db.host, port: db.port, database: db.database },
      managingUser: { username: "rotor_admin", password: "AdminPassw0rd" },
      users: [
        { username: "app_a", password: "FirstPassA1" },
        { username: "app_b", password: "FirstPassB1" },
      ],
    });
    expect(created.status).toBe(200);
  });

  afterAll(async () => {
    await rotor?.stop();
    await db?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  for (const state of STEPS) {
    for (const phase of ["before", "after"] as const) {
      it(`converges after a crash ${phase} ${state}`, async () => {
        const before = await loadRotated(rotor.deps, ref);
        crashAt = { state, phase };
        const { json } = await api("POST", "/v3/configs/config/rotated_secrets/rotate", ref);
        const executionId = json.executionId as string;
        expect(await rotor.runner.wait(executionId)).toBe("ABORTED");
        crashAt = undefined;
        await checkInvariant("after the crash");
        expect(await servedLogsIn()).toBe(true); // the active credential kept working throughout

        const crashed = await loadRotated(rotor.deps, ref);
        const committed = state === "FinishSecret" && phase === "after";
        expect(crashed.flipCount).toBe(before.flipCount + (committed ? 1 : 0));
        if (!committed) expect(crashed.flip?.token ?? null).toBe(state === "CreateSecret" && phase === "before" ? null : executionId);

        // Recovery: the poller re-runs an in-flight flip under its own token; a committed
        // or never-started one is re-run by name, as a restarted process would.
        if (crashed.flip) {
          expect(await rotor.poller.tick()).toBe(1);
        } else {
          await rotor.runner.start("rotate", executionId, { ref, force: true });
        }
        expect(await rotor.runner.wait(executionId)).toBe("SUCCEEDED");

        const after = await loadRotated(rotor.deps, ref);
        expect(after.flip).toBeUndefined();
        expect(after.state).toBe("healthy");
        expect(after.flipCount).toBe(before.flipCount + 1); // exactly one flip, never two
        expect(after.active).toBe(1 - before.active);
        const values = await storedValues();
        // Both instances log in with their current values: the flip left nothing half-done.
        for (const slot of [0, 1] as const) {
          const inst = after.instances[slot];
          expect(await db.canLogin(inst.username, (await openInstance(rotor.deps, after, slot))!)).toBe(true);
          expect(values[inst.username].length).toBeGreaterThan(0);
        }
        expect(await servedLogsIn()).toBe(true);
        expect(invariantViolations).toEqual([]);
      });
    }
  }

  // Cloud mode can't re-run an execution by name: core/rotation/rescue.ts hands a flip whose
  // execution died to a new token and execution. Here it runs on the real workflow.
  for (const state of ["SetSecret", "TestSecret"] as const) {
    it(`a flip whose execution died after ${state} is handed to a new execution and converges`, async () => {
      const before = await loadRotated(rotor.deps, ref);
      crashAt = { state, phase: "after" };
      const { json } = await api("POST", "/v3/configs/config/rotated_secrets/rotate", ref);
      const dead = json.executionId as string;
      expect(await rotor.runner.wait(dead)).toBe("ABORTED");
      crashAt = undefined;
      const stalled = await loadRotated(rotor.deps, ref);
      expect(stalled.flip?.token).toBe(dead);

      // Young flips and live executions are left alone.
      expect(await rescueStalledFlips(rotor.deps, async () => false, { olderThanMs: 3_600_000 })).toEqual([]);
      expect(await rescueStalledFlips(rotor.deps, async () => true, { olderThanMs: 0 })).toEqual([]);
      expect((await loadRotated(rotor.deps, ref)).rev).toBe(stalled.rev);

      const asked: string[] = [];
      const [token, ...more] = await rescueStalledFlips(rotor.deps, async (t) => (asked.push(t), false), { olderThanMs: 0 });
      expect(asked).toEqual([dead]);
      expect(more).toEqual([]);
      expect(token).not.toBe(dead);
      expect(await rotor.runner.wait(token!)).toBe("SUCCEEDED");

      const after = await loadRotated(rotor.deps, ref);
      expect(after.flip).toBeUndefined();
      expect(after).toMatchObject({ state: "healthy", flipCount: before.flipCount + 1, active: 1 - before.active, lastFlipToken: token });
      // The value the dead execution had set (PENDING, unchanged by the hand-over) is the one now active.
      expect(await openInstance(rotor.deps, after, after.active)).toBe(await rotor.deps.envelope.open(stalled.flip!.pending, sealBinding(ref, stalled.flip!.target, stalled.flip!.pendingVersion)));
      expect(await servedLogsIn()).toBe(true);
      expect(invariantViolations).toEqual([]);
    });
  }

  it("a re-run of a finished flip changes nothing", async () => {
    const { json } = await api("POST", "/v3/configs/config/rotated_secrets/rotate", ref);
    expect(await rotor.runner.wait(json.executionId)).toBe("SUCCEEDED");
    const before = await loadRotated(rotor.deps, ref);
    // The stored execution is final: the runner answers with it, as Step Functions does for a duplicate name.
    await rotor.runner.start("rotate", json.executionId, { ref, force: true });
    expect(await rotor.runner.wait(json.executionId)).toBe("SUCCEEDED");
    const after = await loadRotated(rotor.deps, ref);
    expect(after.rev).toBe(before.rev);
    expect(invariantViolations).toEqual([]);
  });
});
