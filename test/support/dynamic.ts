/**
 * Dynamic-secret harness on top of the rotation env (test/support/rotation.ts): the same
 * real database, SMTP receiver and embedded Rotor, plus what leasing needs:
 *
 * - a table `items` the managing user may grant SELECT on (WITH GRANT OPTION), and a table
 *   `private_stuff` it may not, so a lease's grants can be checked both ways;
 * - the managing user's extra rights for ending sessions: PostgreSQL 15 needs nothing more
 *   (the agent makes itself a member of the leased role first); MariaDB needs PROCESS (to see
 *   other accounts' connections) and CONNECTION ADMIN (to KILL them);
 * - per-engine probes: does a user exist, can it log in / SELECT, an open session.
 *
 * Every lease password the env serves is added to `env.passwords` for the leak test.
 */
import mysql from "mysql2/promise";
import pg from "pg";
import { apiRequest } from "./embedded.ts";
import type { DbServer } from "./postgres.ts";
import { startRotationEnv, type Engine, type RotationEnv, type RotationEnvOptions } from "./rotation.ts";

export interface Session {
  /** Runs a statement in this open session; rejects once the session was ended. */
  query(sql: string): Promise<unknown>;
  close(): Promise<void>;
}

export interface Lease {
  username: string;
  password: string;
  leaseId: string;
  expiration: string;
}

export interface DynamicEnv extends RotationEnv {
  /** The grant template that gives SELECT on `items`. */
  grant: string;
  dynamicBody(name: string, o?: Record<string, unknown>): Record<string, unknown>;
  /** POST dynamic_secrets; expects 200. */
  createDynamic(name: string, o?: Record<string, unknown>): Promise<any>;
  /** A download with include_dynamic_secrets=true; the raw response (passwords recorded). */
  leaseRaw(query?: Record<string, string | number | boolean>): Promise<{ status: number; json: any; text: string }>;
  /** Leases and returns the NAME_* values of one dynamic secret; expects 200. */
  lease(name: string, ttlSec?: number): Promise<Lease>;
  leaseOf(values: Record<string, string>, name: string): Lease;
  userExists(username: string): Promise<boolean>;
  /** Every leased (rotor_*) user the database still has. */
  leasedUsers(): Promise<string[]>;
  canLogin(username: string, password: string): Promise<boolean>;
  /** Runs one statement as that user: "ok" or the database's error. */
  tryAs(username: string, password: string, sql: string): Promise<string>;
  openSession(username: string, password: string): Promise<Session>;
  /** Deletes a leased user outside Rotor, as an admin would. */
  dropByHand(username: string): Promise<void>;
  /** PostgreSQL: the role's VALID UNTIL (null elsewhere). */
  validUntil(username: string): Promise<Date | null>;
  leases(dynamic?: string, includeRevoked?: boolean, inConfig?: string): Promise<any[]>;
  /**
   * Where any of `secrets` (default: every password the env saw) appears: the raw table
   * (every item as stored), server logs and console, events, API answers and CLI output,
   * emails, the history of every lease workflow, plus `extra` texts. Empty = no leak.
   */
  findLeaks(opts?: { secrets?: Iterable<string>; extra?: Record<string, string>; configs?: string[] }): Promise<string[]>;
}

interface EngineExtras {
  setup(db: DbServer, managing: string): Promise<void>;
  grant(db: DbServer): string;
  userExists(db: DbServer, username: string): Promise<boolean>;
  leasedUsers(db: DbServer): Promise<string[]>;
  tryAs(db: DbServer, username: string, password: string, sql: string): Promise<string>;
  openSession(db: DbServer, username: string, password: string): Promise<Session>;
  validUntil(db: DbServer, username: string): Promise<Date | null>;
  dropByHand(db: DbServer, username: string, managing: string): Promise<void>;
}

const pgClient = (db: DbServer, user: string, password: string) =>
  new pg.Client({ host: db.host, port: db.port, database: db.database, user, password, connectionTimeoutMillis: 5_000 });
const myConn = (db: DbServer, user: string, password: string) =>
  mysql.createConnection({ host: db.host, port: db.port, database: db.database, user, password, connectTimeout: 5_000 });

const extras: Record<Engine["name"], EngineExtras> = {
  postgres: {
    async setup(db, managing) {
      await db.query("CREATE TABLE items (id int PRIMARY KEY, name text)");
      await db.query("INSERT INTO items VALUES (1, 'one'), (2, 'two')");
      await db.query("CREATE TABLE private_stuff (id int)");
      await db.query(`GRANT SELECT ON items TO ${pg.escapeIdentifier(managing)} WITH GRANT OPTION`);
    },
    grant: () => "GRANT SELECT ON items TO {{username}}",
    userExists: async (db, u) => (await db.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [u])).length > 0,
    leasedUsers: async (db) => (await db.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname LIKE 'rotor\\_%' AND rolname <> 'rotor_admin'")).map((r) => r.rolname),
    async tryAs(db, u, p, sql) {
      const c = pgClient(db, u, p);
      c.on("error", () => {});
      try {
        await c.connect();
        await c.query(sql);
        return "ok";
      } catch (e) {
        return `${(e as { code?: string }).code}: ${(e as Error).message}`;
      } finally {
        await c.end().catch(() => {});
      }
    },
    async openSession(db, u, p) {
      const c = pgClient(db, u, p);
      c.on("error", () => {});
      await c.connect();
      return { query: (sql) => c.query(sql), close: () => c.end().catch(() => {}) };
    },
    async validUntil(db, u) {
      const [row] = await db.query<{ rolvaliduntil: Date | null }>("SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", [u]);
      return row?.rolvaliduntil ?? null;
    },
    // A superuser's REVOKE acts as the table's owner and leaves the managing user's grant: revoke as its grantor.
    dropByHand: (db, u, managing) =>
      db.query(`SET ROLE ${pg.escapeIdentifier(managing)}; REVOKE SELECT ON items FROM ${pg.escapeIdentifier(u)}; RESET ROLE; DROP ROLE ${pg.escapeIdentifier(u)}`).then(() => undefined),
  },
  mariadb: {
    async setup(db, managing) {
      await db.query("CREATE TABLE items (id int PRIMARY KEY, name text)");
      await db.query("INSERT INTO items VALUES (1, 'one'), (2, 'two')");
      await db.query("CREATE TABLE private_stuff (id int)");
      await db.query(`GRANT SELECT ON ${db.database}.items TO ?@'%' WITH GRANT OPTION`, [managing]);
      await db.query("GRANT PROCESS, CONNECTION ADMIN ON *.* TO ?@'%'", [managing]);
    },
    grant: (db) => `GRANT SELECT ON ${db.database}.items TO {{username}}`,
    userExists: async (db, u) => (await db.query("SELECT 1 FROM mysql.user WHERE User = ?", [u])).length > 0,
    leasedUsers: async (db) => (await db.query<{ User: string }>("SELECT User FROM mysql.user WHERE User LIKE 'rotor\\_%' AND User <> 'rotor_admin'")).map((r) => r.User),
    async tryAs(db, u, p, sql) {
      let c: mysql.Connection | undefined;
      try {
        c = await myConn(db, u, p);
        c.on("error", () => {});
        await c.query(sql);
        return "ok";
      } catch (e) {
        return `${(e as { errno?: number }).errno}: ${(e as Error).message}`;
      } finally {
        await c?.end().catch(() => c?.destroy());
      }
    },
    async openSession(db, u, p) {
      const c = await myConn(db, u, p);
      c.on("error", () => {});
      return { query: (sql) => c.query(sql), close: () => c.end().catch(() => c.destroy()) };
    },
    validUntil: async () => null,
    dropByHand: (db, u) => db.query("DROP USER ?@'%'", [u]).then(() => undefined),
  },
};

export async function startDynamicEnv(engine: Engine, opts: RotationEnvOptions = {}): Promise<DynamicEnv> {
  const env = await startRotationEnv(engine, opts);
  const x = extras[engine.name];
  try {
    await x.setup(env.db, env.managing.username);
  } catch (e) {
    await env.stop();
    throw e;
  }
  const { db, project, config } = env;
  const dynamicBody = (name: string, o: Record<string, unknown> = {}) => ({
    project,
    config,
    name,
    provider: engine.provider,
    connection: { host: db.host, port: db.port, database: db.database },
    managingUser: env.managing,
    grants: [x.grant(db)],
    agent: { transport: "local" },
    ...o,
  });
  const leaseOf = (values: Record<string, string>, name: string): Lease => ({
    username: values[`${name}_USERNAME`],
    password: values[`${name}_PASSWORD`],
    leaseId: values[`${name}_LEASE_ID`],
    expiration: values[`${name}_LEASE_EXPIRATION`],
  });
  const leaseRaw = async (query: Record<string, string | number | boolean> = {}) => {
    const res = await apiRequest(env.rotor.url, "GET", "/v3/configs/config/secrets/download", { token: env.token, query: { project, config, include_dynamic_secrets: true, ...query } });
    if (res.status === 200) {
      for (const [k, v] of Object.entries(res.json as Record<string, string>)) if (/_(PASSWORD|SECRET_ACCESS_KEY)$/.test(k)) env.passwords.add(v);
    } else env.outputs.push(res.text);
    return res;
  };
  const dyn: DynamicEnv = Object.assign(env, {
    grant: x.grant(db),
    dynamicBody,
    async createDynamic(name: string, o: Record<string, unknown> = {}) {
      const res = await env.api("POST", "/v3/configs/config/dynamic_secrets", { body: dynamicBody(name, o) });
      if (res.status !== 200) throw new Error(`create ${name}: HTTP ${res.status} ${res.text}`);
      return res.json.dynamicSecret;
    },
    leaseRaw,
    async lease(name: string, ttlSec?: number) {
      const res = await leaseRaw(ttlSec === undefined ? {} : { dynamic_secrets_ttl_sec: ttlSec });
      if (res.status !== 200) throw new Error(`lease: HTTP ${res.status} ${res.text}`);
      return leaseOf(res.json, name);
    },
    leaseOf,
    userExists: (u: string) => x.userExists(db, u),
    leasedUsers: () => x.leasedUsers(db),
    canLogin: (u: string, p: string) => db.canLogin(u, p),
    tryAs: (u: string, p: string, sql: string) => x.tryAs(db, u, p, sql),
    openSession: (u: string, p: string) => x.openSession(db, u, p),
    validUntil: (u: string) => x.validUntil(db, u),
    dropByHand: (u: string) => x.dropByHand(db, u, env.managing.username),
    async leases(dynamic?: string, includeRevoked = false, inConfig = config) {
      const res = await env.api("GET", "/v3/leases", { query: { project, config: inConfig, dynamic, include_revoked: includeRevoked ? "true" : undefined } });
      if (res.status !== 200) throw new Error(`leases: HTTP ${res.status} ${res.text}`);
      return res.json.leases;
    },
    async findLeaks(o: { secrets?: Iterable<string>; extra?: Record<string, string>; configs?: string[] } = {}) {
      const haystacks: Record<string, string> = { ...(o.extra ?? {}) };
      haystacks.table = JSON.stringify(await env.scanTable());
      haystacks.logs = env.logs.join("\n");
      haystacks.events = JSON.stringify(env.events);
      haystacks.mails = env.smtp.mails.map((m) => m.raw).join("\n");
      const leaseIds = new Set<string>();
      for (const c of o.configs ?? [config]) {
        const res = await apiRequest(env.rotor.url, "GET", "/v3/leases", { token: env.token, query: { project, config: c, include_revoked: "true" } });
        for (const l of res.json.leases as Array<{ leaseId: string }>) leaseIds.add(l.leaseId);
      }
      for (const id of leaseIds) {
        const h = await apiRequest(env.rotor.url, "GET", `/v3/executions/${id}/history`, { token: env.token });
        if (h.status === 200) haystacks[`history ${id}`] = h.text;
      }
      haystacks.outputs = env.outputs.join("\n");
      const found: string[] = [];
      for (const secret of o.secrets ?? env.passwords) {
        if (!secret || secret.length < 6) continue;
        for (const [where, text] of Object.entries(haystacks)) if (text.includes(secret)) found.push(`${secret.slice(0, 3)}… in ${where}`);
      }
      return found;
    },
  });
  return dyn;
}
