/**
 * `npm run bench`: what Rotor's machinery costs on top of the SQL it has to run, measured side
 * by side in one run on the same databases, and printed as ratios. Not a test: nothing here
 * fails on a slow machine; the goals are printed next to the numbers.
 *
 *   1. a full flip in embedded mode (rotate.asl.json run by aws-local-stepfunctions, dynalite,
 *      the signed in-process agent) vs the raw SQL it performs (login, ALTER USER, login);
 *   2. flips per second with 1,000 rotated secrets due at once;
 *   3. a database lease through the HTTP API vs the raw CREATE ROLE/GRANT it performs,
 *      and leases per second under 20 concurrent clients;
 *   4. each Lambda bundle's size (budget: under 1 MB).
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import mysql from "mysql2/promise";
import pg from "pg";
import { createProject, createConfig } from "../core/projects.ts";
import { createRotated, rotateNow } from "../core/rotation/manage.ts";
import type { RotationDeps } from "../core/rotation/model.ts";
import { createDynamic } from "../core/dynamic/manage.ts";
import { createToken } from "../core/auth/tokens.ts";
import { generateSigningKey, jwksOf, signRequest } from "../core/agent-protocol/keys.ts";
import { keyResolverOf, verifyRequest } from "../core/agent-protocol/verify.ts";
import { startEmbedded, type Embedded } from "../local/runtime.ts";
import { startMariaDb } from "../test/support/mariadb.ts";
import { startPostgres, type DbServer } from "../test/support/postgres.ts";
import { tempDir } from "../test/support/embedded.ts";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

type EngineName = "postgres" | "mysql";

const password = () => "B" + randomBytes(18).toString("base64url");
const ms = (ns: bigint) => Number(ns) / 1e6;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const out = await f();
  return [ms(process.hrtime.bigint() - t0), out];
}

/** The statements an agent runs, on fresh connections, as a careful hand-written script would. */
interface RawSql {
  login(user: string, pass: string): Promise<void>;
  setPassword(manager: { username: string; password: string }, user: string, pass: string): Promise<void>;
  createLeaseUser(manager: { username: string; password: string }, user: string, pass: string, grant: string): Promise<void>;
}

function rawSql(engine: EngineName, db: DbServer): RawSql {
  if (engine === "postgres") {
    const withClient = async (user: string, pass: string, f: (c: pg.Client) => Promise<unknown>) => {
      const c = new pg.Client({ host: db.host, port: db.port, database: db.database, user, password: pass });
      await c.connect();
      try {
        await f(c);
      } finally {
        await c.end();
      }
    };
    return {
      login: (u, p) => withClient(u, p, (c) => c.query("SELECT 1")),
      setPassword: (m, u, p) => withClient(m.username, m.password, (c) => c.query(`ALTER ROLE "${u}" WITH PASSWORD '${p}'`)),
      createLeaseUser: (m, u, p, grant) =>
        withClient(m.username, m.password, async (c) => {
          const until = new Date(Date.now() + 3600_000).toISOString();
          await c.query(`CREATE ROLE "${u}" WITH LOGIN PASSWORD '${p}' VALID UNTIL '${until}'`);
          await c.query(grant.replace("{{username}}", `"${u}"`));
        }),
    };
  }
  const withConn = async (user: string, pass: string, f: (c: mysql.Connection) => Promise<unknown>) => {
    const c = await mysql.createConnection({ host: db.host, port: db.port, database: db.database, user, password: pass });
    try {
      await f(c);
    } finally {
      await c.end();
    }
  };
  return {
    login: (u, p) => withConn(u, p, (c) => c.query("SELECT 1")),
    setPassword: (m, u, p) => withConn(m.username, m.password, (c) => c.query(`ALTER USER '${u}'@'%' IDENTIFIED BY '${p}'`)),
    createLeaseUser: (m, u, p, grant) =>
      withConn(m.username, m.password, async (c) => {
        await c.query(`CREATE USER '${u}'@'%' IDENTIFIED BY '${p}'`);
        await c.query(grant.replace("{{username}}", `'${u}'@'%'`));
      }),
  };
}

/** A managing user with what rotation and leasing need, and nothing like superuser. */
async function managingUser(engine: EngineName, db: DbServer) {
  const m = { username: "rotor_admin", password: password() };
  if (engine === "postgres") {
    await db.query(`CREATE ROLE rotor_admin WITH LOGIN CREATEROLE PASSWORD '${m.password}'`);
    await db.query(`CREATE TABLE IF NOT EXISTS items (id int)`);
    await db.query(`GRANT SELECT ON items TO rotor_admin WITH GRANT OPTION`);
  } else {
    await db.query(`CREATE USER 'rotor_admin'@'%' IDENTIFIED BY '${m.password}'`);
    await db.query(`CREATE TABLE IF NOT EXISTS app.items (id int)`);
    await db.query(`GRANT CREATE USER, CONNECTION ADMIN ON *.* TO 'rotor_admin'@'%'`);
    await db.query(`GRANT SELECT ON app.* TO 'rotor_admin'@'%' WITH GRANT OPTION`);
  }
  return m;
}

const GRANT = { postgres: "GRANT SELECT ON items TO {{username}}", mysql: "GRANT SELECT ON app.items TO {{username}}" };

async function benchFlip(rotor: Embedded, engine: EngineName, db: DbServer, manager: { username: string; password: string }, rounds: number) {
  const deps = rotor.deps as RotationDeps;
  const users: [User, User] = [
    { username: `flip_a_${engine}`, password: password() },
    { username: `flip_b_${engine}`, password: password() },
  ];
  for (const u of users) await db.createLoginUser(u.username, u.password);
  const ref = { project: "bench", config: engine, name: "FLIP" };
  await createRotated(deps, "bench", {
    ...ref,
    provider: engine,
    connection: { host: db.host, port: db.port, database: db.database },
    managingUser: manager,
    users,
    intervalDays: 30,
    agent: { transport: "local" },
  });
  const raw = rawSql(engine, db);
  const scratch = { username: `flip_raw_${engine}`, password: password() };
  await db.createLoginUser(scratch.username, scratch.password);

  const flips: number[] = [];
  const raws: number[] = [];
  // Interleaved so that both see the same database state, caches and machine load.
  for (let i = 0; i < rounds + 2; i++) {
    const [flipMs, status] = await timed(async () => {
      const { executionId } = await rotateNow(deps, ref);
      return rotor.runner.wait(executionId);
    });
    if (status !== "SUCCEEDED") throw new Error(`flip ${i} of ${engine} ended ${status}`);
    const [rawMs] = await timed(async () => {
      const next = password();
      await raw.login(scratch.username, scratch.password);
      await raw.setPassword(manager, scratch.username, next);
      await raw.login(scratch.username, next);
      scratch.password = next;
    });
    if (i >= 2) (flips.push(flipMs), raws.push(rawMs)); // the first rounds warm up JIT and pools
  }
  return { flip: median(flips), raw: median(raws) };
}

type User = { username: string; password: string };

async function benchManyDue(rotor: Embedded, db: DbServer, manager: { username: string; password: string }, count: number) {
  const deps = rotor.deps as RotationDeps;
  await createConfig(deps, "bench", { project: "bench", name: "many" }).catch(() => {});
  const values = Array.from({ length: count * 2 }, (_, i) => ({ username: `many_${i}`, password: password() }));
  await db.query(values.map((u) => `CREATE ROLE "${u.username}" WITH LOGIN PASSWORD '${u.password}'`).join(";"));
  // Created 40 days ago with a 30-day interval: every one of them is due now.
  const past = { ...deps, now: () => new Date(Date.now() - 40 * 86400_000) };
  const queue = Array.from({ length: count }, (_, i) => i);
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift())
        await createRotated(past, "bench", {
          project: "bench",
          config: "many",
          name: `DB_${i}`,
          provider: "postgres",
          connection: { host: db.host, port: db.port, database: db.database },
          managingUser: manager,
          users: [values[2 * i]!, values[2 * i + 1]!] as [User, User],
          intervalDays: 30,
          agent: { transport: "local" },
        });
    }),
  );
  let succeeded = 0;
  let failed = 0;
  rotor.bus.subscribe((e) => {
    if (e.config !== "many") return;
    if (e.type === "rotation.succeeded") succeeded++;
    if (e.type === "rotation.failed" || e.type === "rotation.paused") failed++;
  });
  const t0 = process.hrtime.bigint();
  while (succeeded + failed < count) {
    await rotor.poller.tick();
    await new Promise((r) => setTimeout(r, 10));
    if (ms(process.hrtime.bigint() - t0) > 600_000) throw new Error(`only ${succeeded} of ${count} flips done after 10 minutes`);
  }
  const seconds = ms(process.hrtime.bigint() - t0) / 1000;
  return { seconds, succeeded, failed, perSecond: succeeded / seconds };
}

async function benchLeases(rotor: Embedded, engine: EngineName, db: DbServer, manager: { username: string; password: string }, rounds: number) {
  const deps = rotor.deps as RotationDeps;
  const config = `lease-${engine}`;
  await createConfig(deps, "bench", { project: "bench", name: config });
  await createDynamic(deps, "bench", {
    project: "bench",
    config,
    name: "DYN",
    provider: engine,
    connection: { host: db.host, port: db.port, database: db.database },
    managingUser: manager,
    grants: [GRANT[engine]],
    defaultTtlSec: 3600,
    maxTtlSec: 86400,
    maxLeases: 100_000,
    agent: { transport: "local" },
  } as never);
  const { token } = await createToken(deps, "bench", { kind: "admin" });
  const url = `${rotor.url}/v3/configs/config/secrets/download?project=bench&config=${config}&format=json&include_dynamic_secrets=true`;
  const lease = async () => {
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as Record<string, string>;
    if (res.status !== 200 || !body.DYN_USERNAME) throw new Error(`lease failed: ${res.status} ${body.error ?? ""}`);
  };
  const raw = rawSql(engine, db);
  const leases: number[] = [];
  const raws: number[] = [];
  for (let i = 0; i < rounds + 2; i++) {
    const [leaseMs] = await timed(lease);
    const [rawMs] = await timed(() => raw.createLeaseUser(manager, `raw_${engine}_${i}`, password(), GRANT[engine]));
    if (i >= 2) (leases.push(leaseMs), raws.push(rawMs));
  }
  const total = 200;
  let next = 0;
  const [concurrentMs] = await timed(() =>
    Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next++ < total) await lease();
      }),
    ),
  );
  return { lease: median(leases), raw: median(raws), perSecond: total / (concurrentMs / 1000) };
}

/**
 * What the agent protocol itself costs per call: Rotor signs (ES512, P-521) and the agent
 * verifies. A flip makes two calls (updateCredential, testCredentials), a lease one; with the
 * raw SQL this is the least either can cost, whatever the rest of Rotor does.
 */
async function signedCallMs(rounds = 50) {
  const { key } = await generateSigningKey();
  const jwks = keyResolverOf(jwksOf(key.publicJwk)); // built once, as an agent does
  const request = { type: "testCredentials" as const, body: { host: "db.internal", port: 5432, database: "app", users: [{ username: "app_a", password: password() }] } };
  const times: number[] = [];
  for (let i = 0; i < rounds + 5; i++) {
    const [t] = await timed(async () => verifyRequest(await signRequest(key.privateKey, key.kid, request), jwks));
    if (i >= 5) times.push(t);
  }
  return median(times);
}

async function bundleSizes(): Promise<Array<{ handler: string; bytes: number }> | string> {
  try {
    const stacks = (await import("../stacks/lambda.ts")) as { bundleSizes?: () => Promise<Array<{ handler: string; bytes: number }>> };
    return stacks.bundleSizes ? await stacks.bundleSizes() : "stacks/lambda.ts exports no bundleSizes()";
  } catch (e) {
    return (e as Error).message;
  }
}

async function main() {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 20);
  const manyDue = Number(process.env.BENCH_DUE ?? 1000);
  // BENCH_PARTS=1,3 runs only those parts (e.g. while profiling one of them).
  const parts = new Set((process.env.BENCH_PARTS ?? "1,2,3,4").split(",").map((p) => p.trim()));
  console.log(`Rotor benchmark — ${new Date().toISOString()}, Node ${process.version}; medians of ${rounds} interleaved rounds\n`);

  const dataDir = tempDir("rotor-bench-");
  const [postgres, mariadb] = await Promise.all([startPostgres(), startMariaDb()]);
  const rotor = await startEmbedded({
    dataDir,
    port: 0,
    log: () => {},
    rotation: { pollIntervalMs: 3600_000, reconcileIntervalMs: 3600_000, maxConcurrentFlips: 50 },
  });
  rotor.poller.stop(); // the benchmark decides when due flips start
  try {
    const deps = rotor.deps as RotationDeps;
    await createProject(deps, "bench", { name: "bench" });
    for (const c of ["postgres", "mysql"]) await createConfig(deps, "bench", { project: "bench", name: c });
    const managers = { postgres: await managingUser("postgres", postgres), mysql: await managingUser("mysql", mariadb) };
    const dbs = { postgres, mysql: mariadb };

    const measuresRatios = parts.has("1") || parts.has("3");
    const signed = measuresRatios ? await signedCallMs() : 0;
    const floor = (raw: number, calls: number) => `floor (raw + ${calls} signed call${calls > 1 ? "s" : ""}) ${((raw + calls * signed) / raw).toFixed(2)}x`;
    if (measuresRatios) console.log(`One signed agent call (ES512 sign + verify): ${fmt(signed)} ms\n`);

    if (parts.has("1")) {
    console.log("1. A full flip vs the raw SQL it performs (login, ALTER USER, login)   goal: ≤ 3x");
    for (const engine of ["postgres", "mysql"] as const) {
      const r = await benchFlip(rotor, engine, dbs[engine], managers[engine], rounds);
      console.log(`   ${engine.padEnd(9)} flip ${fmt(r.flip)} ms   raw ${fmt(r.raw)} ms   ratio ${(r.flip / r.raw).toFixed(2)}x   ${floor(r.raw, 2)}`);
    }

    }

    if (parts.has("2")) {
    console.log(`\n2. ${manyDue} rotated secrets (PostgreSQL) due at once, at most 50 flips in flight`);
    const many = await benchManyDue(rotor, postgres, managers.postgres, manyDue);
    console.log(`   ${many.succeeded} flips in ${many.seconds.toFixed(1)} s: ${many.perSecond.toFixed(1)} flips/s (${many.failed} failed)`);

    }

    if (parts.has("3")) {
    console.log("\n3. A database lease through the HTTP API vs the raw CREATE ROLE/GRANT   goal: ≤ 2x");
    for (const engine of ["postgres", "mysql"] as const) {
      const r = await benchLeases(rotor, engine, dbs[engine], managers[engine], rounds);
      console.log(
        `   ${engine.padEnd(9)} lease ${fmt(r.lease)} ms   raw ${fmt(r.raw)} ms   ratio ${(r.lease / r.raw).toFixed(2)}x   ${floor(r.raw, 1)}   ` +
          `20 concurrent clients: ${r.perSecond.toFixed(1)} leases/s`,
      );
    }

    }

    if (parts.has("4")) {
    console.log("\n4. Lambda bundles (esbuild, minified, Node 20)   budget: < 1 MB each");
    const sizes = await bundleSizes();
    if (typeof sizes === "string") console.log(`   not measured: ${sizes}`);
    else
      for (const s of sizes)
        console.log(`   ${s.handler.padEnd(44)} ${(s.bytes / 1024).toFixed(0).padStart(6)} KiB ${s.bytes < 1024 * 1024 ? "" : "  OVER BUDGET"}`);
    }
  } finally {
    await rotor.stop();
    await Promise.all([postgres.stop(), mariadb.stop()]);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench failed: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
