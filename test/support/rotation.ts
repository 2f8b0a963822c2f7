/**
 * Rotation integration harness: a real database (PostgreSQL or MariaDB) with a managing user
 * and application users, a real SMTP receiver, and an embedded Rotor (in this process) whose
 * waits are shortened, with a project (notification address) and a config.
 *
 *   let env: RotationEnv;
 *   beforeAll(async () => { env = await startRotationEnv(engines[0]); });
 *   afterAll(() => env?.stop());
 *   it("flips", async () => {
 *     const { users } = await env.createRotated("DB");
 *     const { status } = await env.flip("DB");
 *   });
 *
 * Everything that could leak a password is kept for the leak test: every password the env
 * saw (given, generated, served), every server log line and console line, every event on
 * the bus, every API response body (except the download, which serves values on purpose),
 * every CLI output and every email.
 *
 * Managing users get the least their engine needs to change other users' passwords:
 * - PostgreSQL 15: `LOGIN CREATEROLE` (not SUPERUSER). In 15, CREATEROLE may ALTER the
 *   password of any non-superuser role; CONNECT on the database comes from PUBLIC. (From 16
 *   on, CREATEROLE also needs ADMIN OPTION on each role it alters.)
 * - MariaDB 10.11: `GRANT CREATE USER ON *.*` (ALTER USER of another account needs the global
 *   CREATE USER privilege, or UPDATE on `mysql`.*, which is far broader: it can rewrite any
 *   grant table), plus one harmless database-level privilege (`SHOW VIEW ON app.*`), because
 *   the agent connects with the target database selected and MariaDB refuses a connection to
 *   a database the account has no privilege on (error 1044). Note that CREATE USER lets the
 *   account change any account's password, root's included: MariaDB has nothing finer.
 */
import { ScanCommand, type AttributeValue } from "@aws-sdk/client-dynamodb";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { createServer, Socket, type Server } from "node:net";
import pg from "pg";
import { SMTPServer } from "smtp-server";
import { SmtpNotifier } from "../../core/adapters/local/smtp-notifier.ts";
import { loadRotated, sealBinding, type SecretRef } from "../../core/rotation/model.ts";
import type { RotorEvent } from "../../core/events.ts";
import { startEmbedded, type Embedded } from "../../local/runtime.ts";
import { apiRequest, readAdminToken, runCli, tempDir, type ApiOptions, type ApiResponse, type ProcessResult } from "./embedded.ts";
import { startMariaDb } from "./mariadb.ts";
import { startPostgres, type DbServer } from "./postgres.ts";

// ---------------------------------------------------------------------------------------------
// Engines

export interface Engine {
  name: "postgres" | "mariadb";
  /** The rotated secret's `provider`. */
  provider: "postgres" | "mysql";
  start(): Promise<DbServer>;
  /** A login user that can change other users' passwords, and nothing more than it needs. */
  createManagingUser(db: DbServer, username: string, password: string): Promise<void>;
  /** Sets a user's password as the admin, i.e. outside Rotor. */
  setPasswordOutside(db: DbServer, username: string, password: string): Promise<void>;
}

export const engines: Engine[] = [
  {
    name: "postgres",
    provider: "postgres",
    start: startPostgres,
    async createManagingUser(db, username, password) {
      await db.query(`CREATE ROLE ${pg.escapeIdentifier(username)} LOGIN CREATEROLE PASSWORD ${pg.escapeLiteral(password)}`);
    },
    async setPasswordOutside(db, username, password) {
      await db.query(`ALTER ROLE ${pg.escapeIdentifier(username)} PASSWORD ${pg.escapeLiteral(password)}`);
    },
  },
  {
    name: "mariadb",
    provider: "mysql",
    start: startMariaDb,
    async createManagingUser(db, username, password) {
      await db.query("CREATE USER ?@'%' IDENTIFIED BY ?", [username, password]);
      await db.query("GRANT CREATE USER ON *.* TO ?@'%'", [username]);
      await db.query(`GRANT SHOW VIEW ON ${db.database}.* TO ?@'%'`, [username]);
    },
    async setPasswordOutside(db, username, password) {
      await db.query("ALTER USER ?@'%' IDENTIFIED BY ?", [username, password]);
    },
  },
];

/** A password no test shares with another: letters and digits, recognisable in a dump. */
export function testPassword(tag = "Pw"): string {
  return `${tag}${randomBytes(12).toString("hex")}Z9`;
}

// ---------------------------------------------------------------------------------------------
// SMTP receiver

export interface ReceivedMail {
  raw: string;
  to: string[];
  subject: string;
  /** The body, quoted-printable decoded. */
  text: string;
}

export interface SmtpReceiver {
  url: string;
  mails: ReceivedMail[];
  stop(): Promise<void>;
}

function decodeQuotedPrintable(s: string): string {
  const bytes = s.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return Buffer.from(bytes, "latin1").toString("utf8");
}

function parseMail(raw: string, to: string[]): ReceivedMail {
  const split = raw.search(/\r?\n\r?\n/);
  const head = raw.slice(0, split).replace(/\r?\n[ \t]+/g, " ");
  const body = raw.slice(split).replace(/^\r?\n\r?\n/, "");
  const header = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "im").exec(head)?.[1]?.trim() ?? "";
  const decodeWord = (v: string) =>
    v.replace(/=\?utf-8\?([QB])\?([^?]*)\?=/gi, (_, enc: string, text: string) =>
      enc.toUpperCase() === "B" ? Buffer.from(text, "base64").toString("utf8") : decodeQuotedPrintable(text.replace(/_/g, " ")),
    );
  const cte = header("Content-Transfer-Encoding").toLowerCase();
  const text = cte === "quoted-printable" ? decodeQuotedPrintable(body) : cte === "base64" ? Buffer.from(body, "base64").toString("utf8") : body;
  return { raw, to, subject: decodeWord(header("Subject")).replace(/\s+/g, " "), text };
}

/** A real SMTP server (the `smtp-server` package) on 127.0.0.1, keeping every message. */
export async function startSmtp(): Promise<SmtpReceiver> {
  const mails: ReceivedMail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        mails.push(parseMail(Buffer.concat(chunks).toString("utf8"), session.envelope.rcptTo.map((r) => r.address)));
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.server.address() as { port: number };
  return { url: `smtp://127.0.0.1:${port}`, mails, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can make a database unreachable and bring it back on the same port

export interface TcpProxy {
  port: number;
  /** Closes the listener and every connection: new connections are refused (ECONNREFUSED). */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = new Socket();
        sockets.add(client).add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on("error", drop).on("close", drop);
        upstream.on("error", drop).on("close", drop);
        upstream.connect(targetPort, targetHost, () => {
          client.pipe(upstream);
          upstream.pipe(client);
        });
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        port = (s.address() as { port: number }).port;
        server = s;
        resolve();
      });
    });
  const close = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    sockets.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  await listen();
  return {
    get port() {
      return port;
    },
    down: close,
    up: async () => {
      if (!server) await listen();
    },
    stop: close,
  };
}

// ---------------------------------------------------------------------------------------------
// The environment

export interface Credential {
  username: string;
  password: string;
}

export interface ServedCredential extends Credential {
  host: string;
  port: string;
  database: string;
}

export type TaskHook = (state: string, phase: "before" | "after", input: unknown) => Promise<void> | void;

export interface RotationEnvOptions {
  waitMs?: number;
  retryMs?: number;
  failureThreshold?: number;
}

export interface CreateOptions {
  users?: [Credential, Credential];
  managing?: Credential;
  /** Connection overrides (e.g. a proxy port). */
  port?: number;
  intervalDays?: number;
  schedule?: string;
}

export interface RotationEnv {
  engine: Engine;
  db: DbServer;
  rotor: Embedded;
  smtp: SmtpReceiver;
  token: string;
  project: string;
  config: string;
  notifyEmail: string;
  managing: Credential;
  /** Every password this env gave, generated or served. */
  passwords: Set<string>;
  /** Server log lines and console output while the env ran. */
  logs: string[];
  events: RotorEvent[];
  /** Every API response body except downloads; every CLI output. */
  outputs: string[];
  /** Extra onTask hooks a test sets (and clears); they run after the env's own. */
  hooks: Set<TaskHook>;
  ref(name: string): SecretRef;
  api<T = any>(method: string, path: string, opts?: Omit<ApiOptions, "token">): Promise<ApiResponse<T>>;
  /** Two fresh database users `${prefix}_a`, `${prefix}_b` with random passwords. */
  createUsers(prefix: string): Promise<[Credential, Credential]>;
  createBody(name: string, users: [Credential, Credential], opts?: CreateOptions): Record<string, unknown>;
  /** Creates users (unless given) and the rotated secret; expects 200. */
  createRotated(name: string, opts?: CreateOptions): Promise<{ users: [Credential, Credential]; view: any }>;
  getRotated(name: string): Promise<any>;
  /** POST rotate; expects 202 and returns the execution id. */
  rotateNow(name: string): Promise<string>;
  wait(executionId: string): Promise<string>;
  /** Rotate now, wait for the end, then read what is served (recorded). */
  flip(name: string): Promise<{ executionId: string; status: string; served: ServedCredential }>;
  download(): Promise<Record<string, string>>;
  served(name: string): Promise<ServedCredential>;
  history(executionId: string): Promise<Array<{ type: string; stateName?: string; error?: string; cause?: string; attempt?: number }>>;
  executions(name: string, limit?: number): Promise<Array<{ id: string; status: string; error?: string; ref?: Record<string, string> }>>;
  /** The real `rotor` CLI against this Rotor, scoped to the env's project and config. */
  cli(args: string[], input?: string): Promise<ProcessResult>;
  /** Every item of the table, as DynamoDB returned it. */
  scanTable(): Promise<Array<Record<string, AttributeValue>>>;
  stop(): Promise<void>;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function startRotationEnv(engine: Engine, opts: RotationEnvOptions = {}): Promise<RotationEnv> {
  const cleanups: Array<() => Promise<void> | void> = [];
  const passwords = new Set<string>();
  const logs: string[] = [];
  const events: RotorEvent[] = [];
  const outputs: string[] = [];
  const hooks = new Set<TaskHook>();
  const project = "rot";
  const config = "prod";
  const notifyEmail = "ops@rotor.example.com";
  const stop = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
    cleanups.length = 0;
  };

  // Console output of this process while the env runs (core warns and errors through it).
  const originals = { log: console.log, info: console.info, warn: console.warn, error: console.error };
  for (const level of Object.keys(originals) as Array<keyof typeof originals>) {
    console[level] = (...args: unknown[]) => {
      logs.push(args.map((a) => (typeof a === "string" ? a : a instanceof Error ? `${a.name}: ${a.message}\n${a.stack}` : JSON.stringify(a))).join(" "));
      originals[level](...args);
    };
  }
  cleanups.push(() => {
    Object.assign(console, originals);
  });

  try {
    const db = await engine.start();
    cleanups.push(() => db.stop());
    const managing = { username: "rotor_admin", password: testPassword("Mgr") };
    passwords.add(managing.password);
    passwords.add(db.adminPassword);
    await engine.createManagingUser(db, managing.username, managing.password);

    const smtp = await startSmtp();
    cleanups.push(() => smtp.stop());
    const notifier = new SmtpNotifier(smtp.url, "rotor@rotor.example.com");
    cleanups.push(() => notifier.close());

    const dataDir = tempDir("rotor-rotation-");
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));

    let rotorRef: Embedded | undefined;
    /** Every PENDING value Rotor generates, even those never served (rejected, paused). */
    const recordPending = async (input: unknown) => {
      const ref = (input as { ref?: SecretRef }).ref;
      if (!rotorRef || !ref) return;
      try {
        const item = await loadRotated(rotorRef.deps, ref);
        if (item.flip) passwords.add(await rotorRef.deps.envelope.open(item.flip.pending, sealBinding(ref, item.flip.target, item.flip.pendingVersion)));
      } catch {
        /* deleted meanwhile: nothing to record */
      }
    };
    const rotor = await startEmbedded({
      dataDir,
      port: 0,
      log: (line) => logs.push(line),
      rotation: {
        waitMs: opts.waitMs ?? 300,
        retryMs: opts.retryMs ?? 10,
        pollIntervalMs: 3_600_000, // the tests tick the poller themselves
        settings: { failureThreshold: opts.failureThreshold ?? 3, backoffBaseSec: 1, backoffCapSec: 2 },
        notifier,
        onTask: async (state, phase, input) => {
          if ((state === "CreateSecret" && phase === "after") || (state === "SetSecret" && phase === "before")) await recordPending(input);
          for (const hook of hooks) await hook(state, phase, input);
        },
      },
    });
    rotorRef = rotor;
    cleanups.push(() => rotor.stop());
    rotor.bus.subscribe((e) => void events.push(e));
    const token = readAdminToken(dataDir);

    const api = async <T = any>(method: string, path: string, o: Omit<ApiOptions, "token"> = {}) => {
      const res = await apiRequest<T>(rotor.url, method, path, { ...o, token });
      if (!path.startsWith("/v3/configs/config/secrets/download")) outputs.push(res.text);
      return res;
    };
    const expectOk = <T>(res: ApiResponse<T>, status: number, what: string) => {
      if (res.status !== status) throw new Error(`${what}: HTTP ${res.status} ${res.text}`);
      return res.json;
    };
    expectOk(await api("POST", "/v3/projects", { body: { name: project, notifyEmail } }), 200, "create project");
    expectOk(await api("POST", "/v3/configs", { body: { project, name: config } }), 200, "create config");

    const ref = (name: string): SecretRef => ({ project, config, name });

    const download = async () => {
      const res = await apiRequest<Record<string, string>>(rotor.url, "GET", "/v3/configs/config/secrets/download", { token, query: { project, config } });
      const values = expectOk(res, 200, "download");
      for (const [k, v] of Object.entries(values)) if (k.endsWith("_PASSWORD")) passwords.add(v);
      return values;
    };
    const served = async (name: string): Promise<ServedCredential> => {
      const v = await download();
      return { username: v[`${name}_USERNAME`], password: v[`${name}_PASSWORD`], host: v[`${name}_HOST`], port: v[`${name}_PORT`], database: v[`${name}_DATABASE`] };
    };

    const createUsers = async (prefix: string): Promise<[Credential, Credential]> => {
      const users: [Credential, Credential] = [
        { username: `${prefix}_a`, password: testPassword("InitA") },
        { username: `${prefix}_b`, password: testPassword("InitB") },
      ];
      for (const u of users) {
        passwords.add(u.password);
        await db.createLoginUser(u.username, u.password);
      }
      return users;
    };
    const createBody = (name: string, users: [Credential, Credential], o: CreateOptions = {}) => ({
      project,
      config,
      name,
      provider: engine.provider,
      connection: { host: db.host, port: o.port ?? db.port, database: db.database },
      managingUser: o.managing ?? managing,
      users,
      ...(o.schedule ? { schedule: o.schedule } : { intervalDays: o.intervalDays ?? 30 }),
      agent: { transport: "local" },
    });
    const getRotated = async (name: string) => expectOk(await api("GET", "/v3/configs/config/rotated_secrets", { query: { project, config, name } }), 200, `get ${name}`).rotatedSecrets[0];
    const rotateNow = async (name: string) => expectOk(await api("POST", "/v3/configs/config/rotated_secrets/rotate", { body: ref(name) }), 202, `rotate ${name}`).executionId as string;
    const wait = (id: string) => rotor.runner.wait(id);

    const env: RotationEnv = {
      engine,
      db,
      rotor,
      smtp,
      token,
      project,
      config,
      notifyEmail,
      managing,
      passwords,
      logs,
      events,
      outputs,
      hooks,
      ref,
      api,
      createUsers,
      createBody,
      async createRotated(name, o = {}) {
        const users = o.users ?? (await createUsers(name.toLowerCase()));
        const view = expectOk(await api("POST", "/v3/configs/config/rotated_secrets", { body: createBody(name, users, o) }), 200, `create ${name}`).rotatedSecret;
        return { users, view };
      },
      getRotated,
      rotateNow,
      wait,
      async flip(name) {
        const executionId = await rotateNow(name);
        const status = await wait(executionId);
        return { executionId, status, served: await served(name) };
      },
      download,
      served,
      async history(id) {
        return expectOk(await api("GET", `/v3/executions/${encodeURIComponent(id)}/history`), 200, `history ${id}`).events;
      },
      async executions(name, limit = 200) {
        return expectOk(await api("GET", "/v3/executions", { query: { project, config, secret: name, limit } }), 200, `executions ${name}`).executions;
      },
      async cli(args, input) {
        const result = await runCli(args, { env: { ROTOR_API_URL: rotor.url, ROTOR_TOKEN: token, ROTOR_PROJECT: project, ROTOR_CONFIG: config }, input, timeoutMs: 60_000 });
        outputs.push(result.stdout, result.stderr);
        return result;
      },
      async scanTable() {
        const items: Array<Record<string, AttributeValue>> = [];
        let start: Record<string, AttributeValue> | undefined;
        do {
          const out = await rotor.deps.table.client.send(new ScanCommand({ TableName: rotor.deps.table.name, ExclusiveStartKey: start, ConsistentRead: true }));
          items.push(...(out.Items ?? []));
          start = out.LastEvaluatedKey;
        } while (start);
        return items;
      },
      stop,
    };
    return env;
  } catch (e) {
    await stop();
    throw e;
  }
}
