import { rmSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SimulatedCrash } from "../../core/adapters/local/step-functions.ts";
import type { UpdateCredentialBody } from "../../core/agent-protocol/schemas.ts";
import { loadRotated, saveRotated, sealBinding, type SecretRef } from "../../core/rotation/model.ts";
import { AgentError, createAgent, serve, type Engine as AgentEngine } from "../../functions/agents/core.ts";
import { mysqlEngine } from "../../functions/agents/mysql.ts";
import { postgresEngine } from "../../functions/agents/postgres.ts";
import { freePort, tempDir } from "../support/embedded.ts";
import { engines, startRotationEnv, startTcpProxy, testPassword, waitFor, type Credential, type RotationEnv, type TaskHook } from "../support/rotation.ts";

/**
 * Rotated secrets end to end (issue 3), on a real PostgreSQL and a real MariaDB: an embedded
 * Rotor in this process runs the real rotate.asl.json through the real agents; the database,
 * the SMTP server and the `rotor` CLI (a child process) are real. Crash safety lives in
 * crash.test.ts. The last test of each engine searches everything the env recorded for every
 * password it saw, so it must stay last.
 */

const ROTATE = "/v3/configs/config/rotated_secrets/rotate";
const RESUME = "/v3/configs/config/rotated_secrets/resume";
const ROTATED = "/v3/configs/config/rotated_secrets";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What GET /v3/executions/{id}/history answers per event (the harness types only the common fields). */
type HistoryEvent = Awaited<ReturnType<RotationEnv["history"]>>[number] & { id: number; output?: any };

/** The states an execution entered, in order. */
const entered = (events: HistoryEvent[]) => events.filter((e) => e.type === "StateEntered").map((e) => e.stateName);

describe.each(engines)("rotated secrets on $name", (engine) => {
  let env: RotationEnv;
  beforeAll(async () => {
    env = await startRotationEnv(engine);
  });
  afterAll(() => env?.stop());

  const login = (c: Credential) => env.db.canLogin(c.username, c.password);
  /** A password a test sets or sends itself: recorded for the leak test. */
  const remember = (p: string) => (env.passwords.add(p), p);
  /** Runs `hook` for the tasks of one secret only, for the length of `fn`. */
  async function withHook<T>(name: string, hook: TaskHook, fn: () => Promise<T>): Promise<T> {
    const scoped: TaskHook = (state, phase, input) => ((input as { ref?: SecretRef }).ref?.name === name ? hook(state, phase, input) : undefined);
    env.hooks.add(scoped);
    try {
      return await fn();
    } finally {
      env.hooks.delete(scoped);
    }
  }
  async function pendingOf(ref: SecretRef) {
    const item = await loadRotated(env.rotor.deps, ref);
    return env.rotor.deps.envelope.open(item.flip!.pending, sealBinding(ref, item.flip!.target, item.flip!.pendingVersion));
  }

  /** The real agent of this engine over HTTP, with its updateCredential wrapped. */
  async function wrappedAgent(updateCredential: (real: AgentEngine["updateCredential"], body: UpdateCredentialBody, call: number) => ReturnType<AgentEngine["updateCredential"]>) {
    const real = engine.provider === "postgres" ? postgresEngine : mysqlEngine;
    let calls = 0;
    const agent = createAgent({ ...real, updateCredential: (body) => updateCredential(real.updateCredential, body, ++calls) }, { jwks: new URL(env.rotor.url + "/.well-known/jwks.json") });
    const server: Server = await serve(agent, 0, "127.0.0.1");
    const { port } = server.address() as { port: number };
    return {
      spec: { transport: "http" as const, url: `http://127.0.0.1:${port}/` },
      stop: () => new Promise<void>((r) => server.close(() => r())),
    };
  }

  /**
   * Makes the target refuse the first new value of a flip. MariaDB: its real
   * simple_password_check plugin, with a minimum length above Rotor's 32 characters for the
   * first attempt only. PostgreSQL has no password policy that sees a value Rotor hashes
   * client-side, so: the real postgres agent over HTTP, answering its first updateCredential
   * with the error a policy would give, without applying it.
   */
  async function refuseFirstValue(): Promise<{ agent?: { transport: "http"; url: string }; beforeAttempt(n: number): Promise<void>; stop(): Promise<void> }> {
    if (engine.name === "mariadb") {
      await env.db.query("INSTALL SONAME 'simple_password_check'");
      for (const v of ["digits", "letters_same_case", "other_characters"]) await env.db.query(`SET GLOBAL simple_password_check_${v} = 0`);
      return {
        beforeAttempt: (n) => env.db.query(`SET GLOBAL simple_password_check_minimal_length = ${n === 1 ? 64 : 8}`).then(() => undefined),
        stop: () => env.db.query("UNINSTALL SONAME 'simple_password_check'").then(() => undefined),
      };
    }
    const agent = await wrappedAgent(async (real, body, call) => {
      if (call === 1) throw new AgentError("database_error", "22023: password does not meet the password policy");
      return real(body);
    });
    return { agent: agent.spec, beforeAttempt: async () => {}, stop: agent.stop };
  }

  // -------------------------------------------------------------------------------------------
  describe("flips", () => {
    it("serves the new password after each flip; the inactive one still logs in, the one from two flips ago does not", async () => {
      const { users, view } = await env.createRotated("FLIP");
      expect(view).toMatchObject({ name: "FLIP", provider: engine.provider, strategy: "updater", state: "healthy", activeUsername: users[0].username, failureCount: 0, lastFlipAt: null });

      const first = await env.served("FLIP");
      expect(first).toEqual({ ...users[0], host: env.db.host, port: String(env.db.port), database: env.db.database });
      // What was served, newest last; before any flip, b's initial value counts as the one before.
      const served: Credential[] = [users[1], users[0]];
      for (let flip = 1; flip <= 4; flip++) {
        const { status, served: now } = await env.flip("FLIP");
        expect(status).toBe("SUCCEEDED");
        const previous = served[served.length - 1];
        const twoAgo = served[served.length - 2];
        expect(now.username).toBe(twoAgo.username); // the two users take turns
        expect(now.password).not.toBe(twoAgo.password);
        expect(now).toMatchObject({ host: env.db.host, port: String(env.db.port), database: env.db.database });
        expect(await login(now)).toBe(true);
        expect(await login(previous)).toBe(true);
        expect(await login(twoAgo)).toBe(false);
        served.push({ username: now.username, password: now.password });

        const view = await env.getRotated("FLIP");
        expect(view).toMatchObject({ state: "healthy", activeUsername: now.username, inactiveUsername: previous.username, flipCount: flip, failureCount: 0, lastError: null });
        // intervalDays 30: the next flip is half an interval after this one.
        expect(Date.parse(view.nextFlipAt) - Date.parse(view.lastFlipAt)).toBe(15 * 86_400_000);
      }
    });

    it("clients that fetch credentials from the API and log in every few ms never fail across 20 flips", async () => {
      await env.createRotated("ZD");
      const FLIPS = 20;
      const clients = Array.from({ length: 3 }, () => ({ cycles: 0, logins: 0, users: new Set<string>(), failures: [] as string[] }));
      let running = true;
      const loops = clients.map(async (c) => {
        while (running) {
          try {
            const cred = await env.served("ZD");
            c.users.add(cred.username);
            if (await login(cred)) c.logins++;
            else c.failures.push(`${cred.username} refused`);
          } catch (e) {
            c.failures.push((e as Error).message);
          }
          c.cycles++;
          await sleep(2);
        }
      });
      try {
        for (let i = 0; i < FLIPS; i++) {
          expect((await env.flip("ZD")).status).toBe("SUCCEEDED");
          // A real interval is days; here the next flip waits until every client has run one
          // whole fetch-and-login after this flip, so no client holds credentials older than
          // the previous flip (what the two-secret strategy promises).
          const marks = clients.map((c) => c.cycles);
          await waitFor("every client to cycle", () => clients.every((c, k) => c.cycles >= marks[k] + 2), 20_000, 2);
        }
      } finally {
        running = false;
        await Promise.all(loops);
      }
      const logins = clients.reduce((n, c) => n + c.logins, 0);
      expect(clients.flatMap((c) => c.failures)).toEqual([]);
      expect(logins).toBeGreaterThanOrEqual(FLIPS * clients.length * 2);
      for (const c of clients) expect(c.users.size).toBe(2); // each client saw both users served
      expect((await env.getRotated("ZD")).flipCount).toBe(FLIPS);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe("failures", () => {
    it("retries with backoff while the database is unreachable, emails after 3 failures, keeps serving the active credential, then succeeds", async () => {
      const proxy = await startTcpProxy(env.db.host, env.db.port);
      try {
        const { users } = await env.createRotated("DOWN", { port: proxy.port });
        const before = await env.served("DOWN");
        const mailsBefore = env.smtp.mails.length;
        await proxy.down();
        const id = await env.rotateNow("DOWN");

        const retrying = await waitFor("state retrying", async () => {
          const v = await env.getRotated("DOWN");
          return v.state === "retrying" && v;
        });
        expect(retrying).toMatchObject({ failureCount: expect.any(Number), activeUsername: users[0].username, lastError: { code: "Retryable" } });
        const mail = await waitFor("the failure email", () => env.smtp.mails.slice(mailsBefore).find((m) => m.subject.includes("DOWN")));
        expect(mail.to).toEqual([env.notifyEmail]);
        expect(mail.subject).toBe(`Rotor: rotation of ${env.project}/${env.config}/DOWN failed 3 times`);
        expect(mail.text).toContain(`The active credential (${users[0].username}) is unchanged and still served`);

        const failing = await env.getRotated("DOWN");
        expect(failing.failureCount).toBeGreaterThanOrEqual(3);
        expect(failing).toMatchObject({ state: "failed", activeUsername: users[0].username, flipCount: 0 });
        expect(await env.served("DOWN")).toEqual(before);
        expect(await login(before)).toBe(true); // straight to the database: the active user is untouched
        expect(await login(users[1])).toBe(true); // and so is the inactive one

        await proxy.up();
        expect(await env.wait(id)).toBe("SUCCEEDED");
        const healed = await env.getRotated("DOWN");
        expect(healed).toMatchObject({ state: "healthy", failureCount: 0, lastError: null, activeUsername: users[1].username, flipCount: 1 });
        const after = await env.served("DOWN");
        expect(await login(after)).toBe(true);
        expect(await login(users[1])).toBe(false);

        // Inside each round SetSecret retried (Retry), then the round was recorded and the
        // workflow waited, doubling up to the cap (base 1 s, cap 2 s in this env).
        const events = (await env.history(id)) as HistoryEvent[];
        const waits = events.filter((e) => e.type === "StateExited" && e.stateName === "RecordFailure").map((e) => e.output.failure.waitSeconds);
        expect(waits.length).toBeGreaterThanOrEqual(3);
        expect(waits.slice(0, 3)).toEqual([1, 2, 2]);
        expect(events.filter((e) => e.type === "StateRetried" && e.stateName === "SetSecret").length).toBeGreaterThanOrEqual(3 * waits.length);
        expect(entered(events).filter((s) => s === "Backoff").length).toBe(waits.length);
        expect(entered(events).slice(-4)).toEqual(["SetSecret", "TestSecret", "FinishSecret", "Succeeded"]);
        const failed = env.events.filter((e) => e.type === "rotation.failed" && e.detail.name === "DOWN");
        expect(failed.map((e) => e.detail.failureCount)).toEqual(waits.map((_, i) => i + 1));
      } finally {
        await proxy.stop();
      }
    });

    it("pauses on a password changed outside Rotor, changes nothing, says why; resume (API, then CLI) with the new value heals it", async () => {
      const { users } = await env.createRotated("EXT");
      const outsideB = remember(testPassword("OutB"));
      await engine.setPasswordOutside(env.db, users[1].username, outsideB);
      const mailsBefore = env.smtp.mails.length;

      const { executionId, status, served } = await env.flip("EXT");
      expect(status).toBe("FAILED");
      expect(served).toMatchObject(users[0]);
      const paused = await env.getRotated("EXT");
      expect(paused).toMatchObject({ state: "paused", activeUsername: users[0].username, flipCount: 0, nextFlipAt: null, flipInProgress: null });
      expect(paused.pausedReason).toBe(`the stored password of '${users[1].username}' no longer works: it was changed outside Rotor`);
      // Nothing changed in the database: b keeps the value set outside, a its own.
      expect(await login({ username: users[1].username, password: outsideB })).toBe(true);
      expect(await login(users[0])).toBe(true);

      const events = (await env.history(executionId)) as HistoryEvent[];
      expect(entered(events)).toEqual(["CreateSecret", "AlreadyFinished", "SetSecret", "PauseRotation", "Paused"]);
      expect(events.at(-1)).toMatchObject({ type: "ExecutionFailed" });
      const mail = await waitFor("the pause email", () => env.smtp.mails.slice(mailsBefore).find((m) => m.subject.includes("EXT")));
      expect(mail.to).toEqual([env.notifyEmail]);
      expect(mail.subject).toBe(`Rotor: rotation of ${env.project}/${env.config}/EXT is paused`);
      expect(mail.text).toContain("changed outside Rotor");
      expect(mail.text).toContain(`rotor rotated resume EXT`);
      const activity = await env.api("GET", "/v3/activity", { query: { project: env.project, limit: 500 } });
      expect(activity.status).toBe(200);
      const entry = activity.json.activity.find((a: any) => a.type === "rotation.paused" && a.detail.name === "EXT");
      expect(entry.detail.reason).toBe(paused.pausedReason);

      // Paused means paused: rotate now is refused and the poller does not pick it up.
      const refused = await env.api("POST", ROTATE, { body: env.ref("EXT") });
      expect(refused.status).toBe(409);
      expect(refused.json).toMatchObject({ error: "conflict", message: expect.stringContaining("paused") });
      expect(await env.rotor.poller.tick()).toBe(0);

      // A wrong value is refused and leaves it paused.
      const wrong = await env.api("POST", RESUME, { body: { ...env.ref("EXT"), passwords: [null, remember(testPassword("Wrong"))] } });
      expect(wrong.status).toBe(422);
      expect(wrong.json).toMatchObject({ error: "credentials_invalid", message: expect.stringContaining(users[1].username) });
      expect((await env.getRotated("EXT")).state).toBe("paused");

      const resumed = await env.api("POST", RESUME, { body: { ...env.ref("EXT"), passwords: [null, outsideB] } });
      expect(resumed.status).toBe(200);
      expect(resumed.json.rotatedSecret).toMatchObject({ state: "healthy", failureCount: 0, pausedReason: null, nextFlipAt: expect.any(String) });
      const healed = await env.flip("EXT");
      expect(healed.status).toBe("SUCCEEDED");
      expect(healed.served.username).toBe(users[1].username);
      expect(await login(healed.served)).toBe(true);
      expect(await login({ username: users[1].username, password: outsideB })).toBe(false);
      expect(env.events.some((e) => e.type === "rotation.resumed" && e.detail.name === "EXT")).toBe(true);

      // Now a (inactive) is changed outside; the CLI reads its new value from standard input.
      const outsideA = remember(testPassword("OutA"));
      await engine.setPasswordOutside(env.db, users[0].username, outsideA);
      expect((await env.flip("EXT")).status).toBe("FAILED");
      expect((await env.getRotated("EXT")).state).toBe("paused");
      const cliWrong = await env.cli(["rotated", "resume", "EXT", "--password1-stdin"], remember(testPassword("Wrong")) + "\n");
      expect(cliWrong.code).not.toBe(0);
      expect(cliWrong.stderr.trim().split("\n")).toHaveLength(1);
      expect(cliWrong.stderr).toContain(users[0].username);
      const cli = await env.cli(["rotated", "resume", "EXT", "--password1-stdin"], outsideA + "\n");
      expect(cli).toMatchObject({ code: 0, stderr: "" });
      expect(cli.stdout).toMatch(/^resumed EXT: healthy, next flip \d{4}-/);
      const again = await env.flip("EXT");
      expect(again.status).toBe("SUCCEEDED");
      expect(again.served.username).toBe(users[0].username);
      expect(await login(again.served)).toBe(true);
      expect(await login({ username: users[0].username, password: outsideA })).toBe(false);
      expect((await env.getRotated("EXT")).flipCount).toBe(2);
    });

    it("a failure that cannot even be recorded (the table fails) does not end the flip: it waits and starts the round again", async () => {
      const { users } = await env.createRotated("BOOK");
      let testFailures = 0;
      let recordFailures = 0;
      const flip = await withHook(
        "BOOK",
        (state, phase) => {
          if (phase !== "before") return;
          if (state === "TestSecret" && testFailures++ === 0) throw new Error("the test login timed out");
          // Every attempt of the first RecordFailure (its Retry included) fails.
          if (state === "RecordFailure" && recordFailures++ < 6) throw new Error("table unavailable");
        },
        async () => {
          const id = await env.rotateNow("BOOK");
          return { id, status: await env.wait(id) };
        },
      );
      expect(flip.status).toBe("SUCCEEDED");
      const events = (await env.history(flip.id)) as HistoryEvent[];
      expect(entered(events)).toEqual(["CreateSecret", "AlreadyFinished", "SetSecret", "TestSecret", "RecordFailure", "BookkeepingBackoff", "CreateSecret", "AlreadyFinished", "SetSecret", "TestSecret", "FinishSecret", "Succeeded"]);
      expect(events.filter((e) => e.type === "StateRetried" && e.stateName === "RecordFailure")).toHaveLength(5);
      const after = await env.getRotated("BOOK");
      expect(after).toMatchObject({ state: "healthy", flipCount: 1, activeUsername: users[1].username });
      expect(await login(await env.served("BOOK"))).toBe(true);
    });

    it("never retries a value the target refused: the next attempt sets a fresh one", async () => {
      const policy = await refuseFirstValue();
      try {
        const users = await env.createUsers("vr");
        const created = await env.api("POST", ROTATED, { body: { ...env.createBody("VR", users), ...(policy.agent ? { agent: policy.agent } : {}) } });
        expect(created.status).toBe(200);
        const attempts: string[] = [];
        const { executionId, status, served } = await withHook(
          "VR",
          async (state, phase, input) => {
            if (state !== "SetSecret" || phase !== "before") return;
            attempts.push(await pendingOf((input as { ref: SecretRef }).ref));
            await policy.beforeAttempt(attempts.length);
          },
          () => env.flip("VR"),
        );
        expect(status).toBe("SUCCEEDED");
        expect(attempts).toHaveLength(2);
        expect(attempts[1]).not.toBe(attempts[0]);
        expect(served).toMatchObject({ username: users[1].username, password: attempts[1] });
        expect(await login(served)).toBe(true);
        expect(await login({ username: users[1].username, password: attempts[0] })).toBe(false);
        expect(await login(users[0])).toBe(true);

        const events = (await env.history(executionId)) as HistoryEvent[];
        const failedSet = events.filter((e) => e.type === "StateFailed" || e.type === "StateRetried").filter((e) => e.stateName === "SetSecret");
        expect(failedSet.length).toBeGreaterThan(0);
        expect(JSON.stringify(events)).toContain("ValueRejected");
        expect(entered(events)).not.toContain("RecordFailure"); // handled by the state's own Retry
        expect(await env.getRotated("VR")).toMatchObject({ state: "healthy", failureCount: 0, flipCount: 1 });
      } finally {
        await policy.stop();
      }
    });

    it("an error after the target took the value is not mistaken for a refusal: the value is kept", async () => {
      // The answer to a change that committed is lost (the agent reports a database error).
      const agent = await wrappedAgent(async (real, body, call) => {
        const out = await real(body);
        if (call === 1) throw new AgentError("database_error", "08006: connection lost while answering");
        return out;
      });
      try {
        const users = await env.createUsers("amb");
        expect((await env.api("POST", ROTATED, { body: { ...env.createBody("AMB", users), agent: agent.spec } })).status).toBe(200);
        const attempts: string[] = [];
        const { status, served } = await withHook(
          "AMB",
          async (state, phase, input) => {
            if (state === "SetSecret" && phase === "before") attempts.push(await pendingOf((input as { ref: SecretRef }).ref));
          },
          () => env.flip("AMB"),
        );
        // Replacing the value the database now holds would have lost it (and paused the secret).
        expect(status).toBe("SUCCEEDED");
        expect(attempts).toHaveLength(1);
        expect(served).toMatchObject({ username: users[1].username, password: attempts[0] });
        expect(await login(served)).toBe(true);
        expect(await env.getRotated("AMB")).toMatchObject({ state: "healthy", failureCount: 0, flipCount: 1 });
      } finally {
        await agent.stop();
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe("concurrency", () => {
    it("parallel 'rotate now' requests and the poller run one flip, in one execution", async () => {
      const { users } = await env.createRotated("CONC");
      // Due now, as if half an interval had passed.
      const item = await loadRotated(env.rotor.deps, env.ref("CONC"));
      await saveRotated(env.rotor.deps, item, { ...item, nextFlipAt: new Date(Date.now() - 1000).toISOString() });

      // Hold the flip until every caller has its answer, so none can start a second, later flip.
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const { answers, ticks } = await withHook(
        "CONC",
        async (state, phase) => {
          if (state === "SetSecret" && phase === "before") await gate;
        },
        async () => {
          try {
            const requests = Array.from({ length: 6 }, () => env.api("POST", ROTATE, { body: env.ref("CONC") }));
            const ticks: number[] = await Promise.all([env.rotor.poller.tick(), env.rotor.poller.tick()]);
            const answers = await Promise.all(requests);
            ticks.push(await env.rotor.poller.tick()); // a tick while the flip runs starts nothing
            const during = await waitFor("the flip to hold the secret", async () => {
              const v = await env.getRotated("CONC");
              return v.flipInProgress && v;
            });
            expect(during).toMatchObject({ state: "rotating", activeUsername: users[0].username });
            return { answers, ticks };
          } finally {
            release();
          }
        },
      );
      for (const a of answers) expect([202, 409]).toContain(a.status);
      for (const a of answers.filter((a) => a.status === 409)) expect(a.json).toMatchObject({ error: "conflict", message: expect.stringContaining("already running") });
      const ids = new Set(answers.filter((a) => a.status === 202).map((a) => a.json.executionId as string));
      expect(ids.size).toBeLessThanOrEqual(1);
      expect(ticks[2]).toBe(0);

      const executions = await env.executions("CONC");
      expect(executions).toHaveLength(1);
      if (ids.size) expect([...ids]).toEqual([executions[0].id]);
      expect(await env.wait(executions[0].id)).toBe("SUCCEEDED");
      expect(entered((await env.history(executions[0].id)) as HistoryEvent[])).toContain("FinishSecret");
      const view = await env.getRotated("CONC");
      expect(view).toMatchObject({ state: "healthy", flipCount: 1, activeUsername: users[1].username });
      expect(await login(await env.served("CONC"))).toBe(true);
      expect(await login(users[0])).toBe(true);
      expect(Date.parse(view.nextFlipAt)).toBeGreaterThan(Date.now() + 14 * 86_400_000); // the interval restarted
      expect(await env.rotor.poller.tick()).toBe(0); // and nothing is due any more
    });
  });

  // -------------------------------------------------------------------------------------------
  describe("executions", () => {
    it("lists a secret's flips and shows a flip's steps, through the API and the rotor CLI", async () => {
      await env.createRotated("EXEC");
      const first = await env.flip("EXEC");
      const rotate = await env.cli(["rotated", "rotate", "EXEC", "--wait"]);
      expect(rotate).toMatchObject({ code: 0, stderr: "flip of EXEC succeeded\n" });
      const executionId = rotate.stdout.trim();
      expect(await env.wait(executionId)).toBe("SUCCEEDED");
      const events = (await env.history(executionId)) as HistoryEvent[];
      expect(events[0]).toMatchObject({ type: "ExecutionStarted" });
      expect(events.at(-1)).toMatchObject({ type: "ExecutionSucceeded" });
      expect(entered(events)).toEqual(["CreateSecret", "AlreadyFinished", "SetSecret", "TestSecret", "FinishSecret", "Succeeded"]);
      expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));

      const listed = await env.executions("EXEC");
      expect(listed).toHaveLength(2);
      expect(listed[0]).toMatchObject({ id: executionId, machine: "rotate", status: "SUCCEEDED", ref: env.ref("EXEC") });
      expect(listed[1]).toMatchObject({ id: first.executionId, status: "SUCCEEDED" });
      const cliList = await env.cli(["executions", "list", "--secret", "EXEC"]);
      expect(cliList).toMatchObject({ code: 0, stderr: "" });
      const [header, ...rows] = cliList.stdout.trim().split("\n");
      expect(header.split(/\s+/)).toEqual(["id", "machine", "status", "startedAt", "stoppedAt", "error"]);
      expect(rows.map((r) => r.split(/\s+/)[0])).toEqual(listed.map((e) => e.id));
      expect(rows[0].split(/\s+/).slice(1, 3)).toEqual(["rotate", "SUCCEEDED"]);

      const cliHistory = await env.cli(["executions", "history", executionId]);
      expect(cliHistory).toMatchObject({ code: 0, stderr: "" });
      const lines = cliHistory.stdout.trim().split("\n").slice(1);
      expect(lines).toHaveLength(events.length);
      const steps = lines.filter((l) => l.includes("StateEntered")).map((l) => l.trim().split(/\s+/)[3]);
      expect(steps).toEqual(entered(events));

      const missing = await env.cli(["executions", "history", "rot-no-such-execution"]);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr.trim().split("\n")).toHaveLength(1);
      expect((await env.api("GET", "/v3/executions/rot-no-such-execution/history")).status).toBe(404);
    });

    it("a flip re-run after its process died stays one execution, its history continued", async () => {
      await env.createRotated("RERUN");
      const id = await withHook(
        "RERUN",
        (state, phase) => {
          if (state === "SetSecret" && phase === "after") throw new SimulatedCrash("after SetSecret");
        },
        async () => {
          const id = await env.rotateNow("RERUN");
          expect(await env.wait(id)).toBe("ABORTED");
          return id;
        },
      );
      expect(await env.rotor.poller.tick()).toBe(1); // the flip in flight is due at once
      expect(await env.wait(id)).toBe("SUCCEEDED");

      const listed = await env.executions("RERUN");
      expect(listed.map((e) => e.id)).toEqual([id]);
      const events = (await env.history(id)) as HistoryEvent[];
      expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
      expect(events.filter((e) => e.type === "ExecutionStarted")).toHaveLength(2);
      const rerun = events.slice(events.findLastIndex((e) => e.type === "ExecutionStarted"));
      expect(entered(rerun)).toEqual(["CreateSecret", "AlreadyFinished", "SetSecret", "TestSecret", "FinishSecret", "Succeeded"]);
      expect(rerun.at(-1)).toMatchObject({ type: "ExecutionSucceeded" });
      expect(await env.getRotated("RERUN")).toMatchObject({ state: "healthy", flipCount: 1 });
    });
  });

  // -------------------------------------------------------------------------------------------
  describe("managing rotated secrets", () => {
    const FIELDS = ["name", "provider", "strategy", "state", "activeUsername", "lastFlipAt", "nextFlipAt", "failureCount"];

    it("list and get, through the API and the CLI, show the state and never a password", async () => {
      await env.createRotated("LIST");
      await env.flip("LIST");
      const list = await env.api("GET", ROTATED, { query: { project: env.project, config: env.config } });
      expect(list.status).toBe(200);
      const byName = Object.fromEntries(list.json.rotatedSecrets.map((r: any) => [r.name, r]));
      expect(Object.keys(byName)).toContain("LIST");
      for (const view of Object.values<any>(byName)) for (const f of FIELDS) expect(view).toHaveProperty(f);
      expect(byName.LIST).toMatchObject({ provider: engine.provider, strategy: "updater", state: "healthy", failureCount: 0, flipCount: 1, lastFlipAt: expect.any(String) });
      expect(JSON.stringify(list.json)).not.toMatch(/password"\s*:/i);

      const cliList = await env.cli(["rotated", "list", "--json"]);
      expect(cliList).toMatchObject({ code: 0, stderr: "" });
      expect(JSON.parse(cliList.stdout)).toEqual(list.json.rotatedSecrets);
      const table = await env.cli(["rotated", "list"]);
      expect(table.code).toBe(0);
      const [header, ...rows] = table.stdout.trim().split("\n");
      expect(header.split(/\s+/)).toEqual(["name", "provider", "state", "activeUsername", "lastFlipAt", "nextFlipAt", "failureCount"]);
      expect(rows.find((r) => r.startsWith("LIST "))!.split(/\s+/)).toEqual(["LIST", engine.provider, "healthy", byName.LIST.activeUsername, byName.LIST.lastFlipAt, byName.LIST.nextFlipAt, "0"]);

      const get = await env.cli(["rotated", "get", "LIST"]);
      expect(get.code).toBe(0);
      expect(JSON.parse(get.stdout)).toEqual(byName.LIST);
      const missing = await env.cli(["rotated", "get", "NOPE"]);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr.trim().split("\n")).toHaveLength(1);
      expect((await env.api("GET", ROTATED, { query: { project: env.project, config: env.config, name: "NOPE" } })).status).toBe(404);
    });

    it("accepts rate() and cron() schedules (API and CLI) and refuses a bad one with a 4xx", async () => {
      const users = await env.createUsers("sched");
      const spec = JSON.stringify({ ...env.createBody("SCHED", users), project: undefined, config: undefined, intervalDays: undefined });
      const created = await env.cli(["rotated", "create", "--file", "-", "--schedule", "rate(12 hours)"], spec);
      expect(created).toMatchObject({ code: 0, stderr: "" });
      expect(created.stdout).toContain(`created rotated secret SCHED: active ${users[0].username}`);
      const view = await env.getRotated("SCHED");
      expect(view.schedule).toBe("rate(12 hours)");
      expect(Math.abs(Date.parse(view.nextFlipAt) - Date.parse(view.createdAt) - 12 * 3_600_000)).toBeLessThan(1000);
      // The flip restarts the schedule from its own time.
      expect((await env.flip("SCHED")).status).toBe("SUCCEEDED");
      const flipped = await env.getRotated("SCHED");
      expect(Date.parse(flipped.nextFlipAt) - Date.parse(flipped.lastFlipAt)).toBe(12 * 3_600_000);

      // From a spec file this time, with the schedule in the spec.
      const dir = tempDir("rotor-spec-");
      try {
        const file = join(dir, "cron.json");
        writeFileSync(file, JSON.stringify(env.createBody("CRON", await env.createUsers("cron"), { schedule: "cron(0 8 ? * MON-FRI *)" })), { mode: 0o600 });
        expect((await env.cli(["rotated", "create", "--file", file])).code).toBe(0);
        const missing = await env.cli(["rotated", "create", "--file", join(dir, "missing.json")]);
        expect(missing).toMatchObject({ code: 2, stderr: `rotor: cannot read ${join(dir, "missing.json")}: no such file\n` });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      const cron = await env.getRotated("CRON");
      expect(cron.schedule).toBe("cron(0 8 ? * MON-FRI *)");
      const next = new Date(cron.nextFlipAt);
      expect([next.getUTCHours(), next.getUTCMinutes(), next.getUTCSeconds()]).toEqual([8, 0, 0]);
      expect([1, 2, 3, 4, 5]).toContain(next.getUTCDay());
      expect(next.getTime() - Date.now()).toBeLessThanOrEqual(3 * 86_400_000 + 1000); // the next weekday 08:00

      const badUsers = await env.createUsers("bad");
      for (const schedule of ["rate(0 hours)", "rate(1 hours)", "every day", "cron(0 8 * * MON-FRI *)", "cron(0 8 ? * MON-FRI)", "cron(99 8 ? * * *)"]) {
        const res = await env.api("POST", ROTATED, { body: env.createBody("BADSCHED", badUsers, { schedule }) });
        expect(res.status, schedule).toBe(400);
        expect(res.json, schedule).toMatchObject({ error: "invalid_request", message: expect.any(String) });
      }
      const both = await env.api("POST", ROTATED, { body: { ...env.createBody("BADSCHED", badUsers), schedule: "rate(1 day)" } });
      expect(both.status).toBe(400);
      const cliBad = await env.cli(["rotated", "create", "--file", "-", "--schedule", "whenever"], JSON.stringify(env.createBody("BADSCHED", badUsers)));
      expect(cliBad.code).not.toBe(0);
      expect(cliBad.stderr.trim().split("\n")).toHaveLength(1);
      expect(cliBad.stderr).toContain("whenever");
      expect((await env.api("GET", ROTATED, { query: { project: env.project, config: env.config, name: "BADSCHED" } })).status).toBe(404);
    });

    it("refuses to create with a wrong managing or user password, with a clear 4xx, storing nothing", async () => {
      const users = await env.createUsers("wrong");
      const cases: Array<{ body: Record<string, unknown>; who: string }> = [
        { body: env.createBody("WRONG", users, { managing: { username: env.managing.username, password: remember(testPassword("BadMgr")) } }), who: env.managing.username },
        { body: env.createBody("WRONG", [users[0], { username: users[1].username, password: remember(testPassword("BadUser")) }]), who: users[1].username },
        { body: env.createBody("WRONG", [{ username: "no_such_user", password: remember(testPassword("Ghost")) }, users[1]]), who: "no_such_user" },
      ];
      for (const { body, who } of cases) {
        const res = await env.api("POST", ROTATED, { body });
        expect(res.status, who).toBe(422);
        expect(res.json).toMatchObject({ error: "credentials_invalid", message: expect.stringContaining(`'${who}' cannot log in`) });
      }
      // Rotor never rotates the managing user; and a database nobody answers on is refused too.
      const managingAsUser = await env.api("POST", ROTATED, { body: env.createBody("WRONG", [users[0], env.managing]) });
      expect(managingAsUser.status).toBe(400);
      expect(managingAsUser.json).toMatchObject({ error: "invalid_request", message: expect.stringContaining("managing user") });
      const nobody = await env.api("POST", ROTATED, { body: env.createBody("WRONG", users, { port: await freePort() }) });
      expect(nobody.status).toBe(422);
      expect(nobody.json).toMatchObject({ error: "agent_failed", message: expect.stringContaining("could not check") });
      const cli = await env.cli(["rotated", "create", "--file", "-"], JSON.stringify(cases[1].body));
      expect(cli.code).not.toBe(0);
      expect(cli.stderr.trim().split("\n")).toHaveLength(1);
      expect(cli.stderr).toContain(users[1].username);

      expect((await env.api("GET", ROTATED, { query: { project: env.project, config: env.config, name: "WRONG" } })).status).toBe(404);
      expect(Object.keys(await env.download()).filter((k) => k.startsWith("WRONG_"))).toEqual([]);
      expect((await env.scanTable()).filter((i) => i.sk?.S === "ROTATED#WRONG")).toEqual([]);
      for (const u of users) expect(await login(u)).toBe(true); // nothing was changed either
      // The same body with the right passwords works: the refusals were about the passwords.
      expect((await env.api("POST", ROTATED, { body: env.createBody("WRONG", users) })).status).toBe(200);
    });

    it("delete (CLI and API) stops rotation and leaves the database users alone", async () => {
      const { users } = await env.createRotated("DEL");
      const { served } = await env.flip("DEL");
      const del = await env.cli(["rotated", "delete", "DEL"]);
      expect(del).toMatchObject({ code: 0, stderr: "" });
      expect(del.stdout.trim()).toBe("deleted rotated secret DEL");

      expect((await env.api("GET", ROTATED, { query: { project: env.project, config: env.config, name: "DEL" } })).status).toBe(404);
      expect(Object.keys(await env.download()).filter((k) => k.startsWith("DEL_"))).toEqual([]);
      const rotate = await env.api("POST", ROTATE, { body: env.ref("DEL") });
      expect(rotate.status).toBe(404);
      expect(await env.rotor.poller.tick()).toBe(0);
      // Both users keep the passwords they had: the active one from the flip, the inactive one its own.
      expect(await login(served)).toBe(true);
      expect(await login(users[0])).toBe(true);
      expect(env.events.some((e) => e.type === "rotation.deleted" && e.detail.name === "DEL")).toBe(true);

      const other = await env.createRotated("DELAPI");
      const api = await env.api("DELETE", "/v3/configs/config/rotated_secret", { query: { ...env.ref("DELAPI") } });
      expect(api).toMatchObject({ status: 200, json: { deleted: true } });
      expect((await env.api("GET", ROTATED, { query: { project: env.project, config: env.config } })).json.rotatedSecrets.map((r: any) => r.name)).not.toContain("DELAPI");
      for (const u of other.users) expect(await login(u)).toBe(true);
      const again = await env.api("DELETE", "/v3/configs/config/rotated_secret", { query: { ...env.ref("DELAPI") } });
      expect(again.status).toBe(404);
    });

    it("delete also stops a flip that keeps failing (its database is gone)", async () => {
      const proxy = await startTcpProxy(env.db.host, env.db.port);
      try {
        const { users } = await env.createRotated("GONE", { port: proxy.port });
        await proxy.down();
        const id = await env.rotateNow("GONE");
        await waitFor("state retrying", async () => (await env.getRotated("GONE")).state === "retrying");
        // 409 "changed while deleting" is possible when a failure is recorded at that moment: try again, as a user would.
        await waitFor("the delete", async () => {
          const del = await env.api("DELETE", "/v3/configs/config/rotated_secret", { query: { ...env.ref("GONE") } });
          if (del.status === 409) expect(del.json.message).toContain("changed while deleting");
          else expect(del.status).toBe(200);
          return del.status === 200;
        });
        expect(await env.wait(id)).toBe("SUCCEEDED");
        const states = entered((await env.history(id)) as HistoryEvent[]);
        expect(states.at(-1)).toBe("Skipped"); // ended by the delete, not by its retries running out
        const failures = env.events.filter((e) => e.type === "rotation.failed" && e.detail.name === "GONE").length;
        expect(states.filter((s) => s === "RecordFailure").length).toBeGreaterThanOrEqual(failures);
        await proxy.up();
        for (const u of users) expect(await login(u)).toBe(true);
        expect(await env.rotor.poller.tick()).toBe(0);
      } finally {
        await proxy.stop();
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  it("leaks no password: not in the table, a log or console line, an event, an API answer, CLI output or an email", async () => {
    const items = await env.scanTable();
    const places: Record<string, string> = {
      table: JSON.stringify(items),
      logs: env.logs.join("\n"),
      events: JSON.stringify(env.events),
      "API answers and CLI output": env.outputs.join("\n"),
      emails: env.smtp.mails.map((m) => `${m.raw}\n${m.subject}\n${m.text}`).join("\n"),
    };
    const found: string[] = [];
    for (const [where, text] of Object.entries(places)) for (const p of env.passwords) if (text.includes(p)) found.push(`${where}: ${p.slice(0, 5)}…`);
    expect(found).toEqual([]);
    // And the search had something to search: histories, emails, every value of every flip.
    expect(items.some((i) => i.kind?.S === "execution-event")).toBe(true);
    expect(env.smtp.mails.length).toBeGreaterThanOrEqual(3);
    expect(env.passwords.size).toBeGreaterThan(60);
  });
});
