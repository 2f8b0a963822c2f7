/**
 * DynamoDB engines for tests: dynalite (pure JS, in memory; over HTTP, and in process as embedded
 * mode reaches it) and AWS's DynamoDB Local (Java),
 * plus `makeDeps`, which builds core's `Deps` on a fresh table of a running engine.
 *
 *   describe.each(ENGINES)("store on $name", (engine) => {
 *     let db: RunningEngine;
 *     beforeAll(async () => { db = await engine.start(); });
 *     afterAll(() => db?.stop());
 *     it("...", async () => { const deps = await makeDeps(db.endpoint); ... });
 *   });
 *
 * Set ROTOR_TEST_ENGINES=dynalite (comma-separated names) to run a subset.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, type AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { DynamoDBClient, ListTablesCommand, ScanCommand, type AttributeValue } from "@aws-sdk/client-dynamodb";
import { Envelope } from "../../core/crypto/envelope.ts";
import { FileKeyWrapper } from "../../core/adapters/local/file-key-wrapper.ts";
import { LocalEventBus, type RotorEvent } from "../../core/events.ts";
import type { Deps } from "../../core/context.ts";
import { Table } from "../../core/store/table.ts";
import { startDynalite as startEmbeddedDynalite, type RunningDynalite } from "../../local/dynalite.ts";

export interface RunningEngine {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  /** Milliseconds from start() until the engine answered. */
  startupMs: number;
  /** Stops the engine; safe to call twice. */
  stop(): Promise<void>;
}

export interface Engine {
  name: "dynalite" | "dynalite-in-process" | "dynamodb-local";
  start(): Promise<RunningEngine>;
}

// dynalite ships no type declarations; load it through require with the small shape we use.
type DynaliteFactory = (opts: { createTableMs?: number; deleteTableMs?: number; updateTableMs?: number; path?: string }) => Server;
const require = createRequire(import.meta.url);

/** dynalite@4, in memory, on 127.0.0.1 and a free port. */
export async function startDynalite(): Promise<RunningEngine> {
  const t0 = performance.now();
  const dynalite = require("dynalite") as DynaliteFactory;
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    startupMs: Math.round(performance.now() - t0),
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve()); // closes the LevelDB store too
        server.closeAllConnections(); // SDK keep-alive sockets would otherwise hold close() open
      });
      return stopped;
    },
  };
}

/**
 * Embedded mode's own dynalite (local/dynalite.ts), reached in process as `npm start`
 * reaches it: clients built by dynamoClient() for its endpoint use its request handler
 * and signer, so the same suites check that path end to end.
 */
const inProcess = new Map<string, Pick<RunningDynalite, "requestHandler" | "signer">>();
export async function startDynaliteInProcess(): Promise<RunningEngine> {
  const t0 = performance.now();
  const running = await startEmbeddedDynalite();
  inProcess.set(running.endpoint, running);
  let stopped: Promise<void> | undefined;
  return {
    endpoint: running.endpoint,
    startupMs: Math.round(performance.now() - t0),
    stop() {
      stopped ??= running.stop().finally(() => inProcess.delete(running.endpoint));
      return stopped;
    },
  };
}

const EMULATOR_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  "../../node_modules/amplify-dynamodb-simulator/emulator",
);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether process `pid` has a listening TCP socket on `port`; undefined where /proc cannot tell. */
function listensOn(pid: number, port: number): boolean | undefined {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        /* fd closed meanwhile */
      }
    }
  } catch {
    return undefined;
  }
  let sawTable = false;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    sawTable = true;
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/); // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      if (f.length >= 10 && f[3] === "0A" && parseInt(f[1].split(":")[1], 16) === port && inodes.has(f[9])) return true;
    }
  }
  return sawTable ? false : undefined;
}

/** Every JVM this process started and has not yet stopped: killed when the process exits. */
const liveJvms = new Set<ChildProcess>();
let exitHookInstalled = false;
function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal); // the JVM and its watchdog share a process group
  } catch {
    /* already gone */
  }
}

/**
 * AWS's DynamoDB Local (the jar inside amplify-dynamodb-simulator) on Java 17, in memory,
 * on a free port; resolves once it answers ListTables.
 *
 * The JVM gets a tiny watchdog in its own process group: a `cat` reading our stdin pipe. When
 * this process dies in any way (even SIGKILL) or stop() closes the pipe, `cat` ends and the
 * watchdog kills the whole group, so no JVM outlives the test run. The spawned pid is the
 * JVM itself (`exec`), so its 'exit' means the JVM is gone. A process 'exit' hook SIGKILLs
 * whatever is left.
 */
export async function startDynamoDbLocal(opts: { timeoutMs?: number } = {}): Promise<RunningEngine> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const t0 = performance.now();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await launchDynamoDbLocal(port, t0, timeoutMs);
    } catch (e) {
      lastError = e;
      if (!/address already in use|BindException/i.test((e as Error).message)) throw e;
    }
  }
  throw lastError;
}

async function launchDynamoDbLocal(port: number, t0: number, timeoutMs: number): Promise<RunningEngine> {
  const javaArgs = [
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.library.path=./DynamoDBLocal_lib",
    "-jar",
    "DynamoDBLocal.jar",
    "-inMemory",
    "-disableTelemetry",
    "-port",
    String(port),
  ];
  // fd 3 = our pipe, read only by the watchdog; the JVM gets /dev/null and replaces the shell.
  const script = 'exec 3<&0 </dev/null; (cat <&3 >/dev/null; kill -TERM 0) & exec java "$@" 3<&-';
  const child = spawn("sh", ["-c", script, "sh", ...javaArgs], {
    cwd: EMULATOR_DIR,
    detached: true, // own process group: the watchdog's `kill 0` and our SIGKILL reach exactly it
    stdio: ["pipe", "pipe", "pipe"],
  });
  liveJvms.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of liveJvms) killGroup(c, "SIGKILL");
    });
  }
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  child.stdin!.on("error", () => {}); // EPIPE after the shell is gone
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", (e) => {
      spawnError = e; // e.g. no `sh`, or the emulator folder is missing: no 'exit' follows
      resolve();
    });
  });

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      child.stdin!.end(); // the watchdog SIGTERMs the group (and ends itself)
      if (child.exitCode === null && child.signalCode === null) {
        const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }
      liveJvms.delete(child);
    })();
    return stopped;
  };

  const endpoint = `http://127.0.0.1:${port}`;
  const probe = new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 1_000, requestTimeout: 5_000 },
  });
  let exitedEarly = false;
  void exited.then(() => (exitedEarly = true));
  // Ready = our JVM listens on the port and answers. Checking who listens (Linux /proc) keeps a
  // server that grabbed the port in the meantime from passing for ours; without /proc, fall
  // back to the banner DynamoDB Local prints (with the port) before it binds. A failed bind
  // prints an exception but leaves the JVM running, so watch the output, not only the exit.
  const banner = new RegExp(`Port:\\s*${port}\\b`);
  const failed = /Exception in thread "main"|BindException|Address already in use/;
  const check = () => {
    if (failed.test(output)) throw new Error(`DynamoDB Local failed to start:\n${output}`);
    if (spawnError) throw new Error(`could not start DynamoDB Local in ${EMULATOR_DIR}: ${spawnError.message}`);
    if (exitedEarly) throw new Error(`DynamoDB Local exited during startup (code ${child.exitCode}):\n${output}`);
  };
  try {
    const deadline = t0 + timeoutMs;
    for (;;) {
      check();
      const ours = listensOn(child.pid!, port);
      if (ours === true || (ours === undefined && banner.test(output))) {
        const answered = await probe.send(new ListTablesCommand({})).then(
          () => true,
          () => false,
        );
        check();
        if (answered) break;
      }
      if (performance.now() > deadline) throw new Error(`DynamoDB Local did not answer within ${timeoutMs} ms:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    await stop();
    throw e;
  } finally {
    probe.destroy();
  }
  return { endpoint, startupMs: Math.round(performance.now() - t0), stop };
}

export const ALL_ENGINES: Engine[] = [
  { name: "dynalite", start: startDynalite },
  { name: "dynalite-in-process", start: startDynaliteInProcess },
  { name: "dynamodb-local", start: () => startDynamoDbLocal() },
];

/** The engines a suite runs against: both, unless ROTOR_TEST_ENGINES names a subset. */
export const ENGINES: Engine[] = (() => {
  const only = process.env.ROTOR_TEST_ENGINES?.split(",").map((s) => s.trim()).filter(Boolean);
  return only?.length ? ALL_ENGINES.filter((e) => only.includes(e.name)) : ALL_ENGINES;
})();

/** A clock tests move by hand. `now` is a bound function, usable as `Deps.now`. */
export class TestClock {
  private t: number;
  constructor(start: Date | string = "2030-01-01T00:00:00.000Z") {
    this.t = new Date(start).getTime();
  }
  readonly now = (): Date => new Date(this.t);
  advance(ms: number): Date {
    this.t += ms;
    return this.now();
  }
  set(at: Date | string): Date {
    this.t = new Date(at).getTime();
    return this.now();
  }
}

export interface TestDeps extends Deps {
  events: LocalEventBus;
  /** The low-level client, for raw reads (Scan) that bypass core. */
  client: DynamoDBClient;
  tableName: string;
  /** Every event published on `events`, in order. */
  published: RotorEvent[];
  /** Present when makeDeps was asked for a controllable clock. */
  clock?: TestClock;
  /** Destroys the client (the table stays until the engine stops). */
  close(): void;
}

export function dynamoClient(endpoint: string): DynamoDBClient {
  const direct = inProcess.get(endpoint);
  return new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    ...(direct && { requestHandler: direct.requestHandler, signer: direct.signer }),
  });
}

/**
 * Deps on a fresh, uniquely named table of the engine at `endpoint`: an in-memory master key,
 * a LocalEventBus whose events are collected in `published`, and the real clock unless
 * `clock` is given (`true` for a TestClock at 2030-01-01, or a TestClock of your own).
 */
export async function makeDeps(
  endpoint: string,
  opts: { clock?: TestClock | true; tableName?: string; masterKey?: Buffer } = {},
): Promise<TestDeps> {
  const client = dynamoClient(endpoint);
  const tableName = opts.tableName ?? `rotor-test-${randomBytes(6).toString("hex")}`;
  const table = new Table(client, tableName);
  await table.ensureExists();
  const clock = opts.clock === true ? new TestClock() : opts.clock;
  const events = new LocalEventBus();
  const published: RotorEvent[] = [];
  events.subscribe((e) => {
    published.push(e);
  });
  return {
    table,
    envelope: new Envelope(FileKeyWrapper.fromKey(opts.masterKey ?? randomBytes(32))),
    events,
    now: clock ? clock.now : () => new Date(),
    client,
    tableName,
    published,
    clock,
    close: () => client.destroy(),
  };
}

/** Every item of the table exactly as stored (DynamoDB JSON), by a plain paginated Scan. */
export async function scanRaw(client: DynamoDBClient, tableName: string): Promise<Record<string, AttributeValue>[]> {
  const items: Record<string, AttributeValue>[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const out = await client.send(new ScanCommand({ TableName: tableName, ExclusiveStartKey: start, ConsistentRead: true }));
    items.push(...(out.Items ?? []));
    start = out.LastEvaluatedKey;
  } while (start);
  return items;
}
