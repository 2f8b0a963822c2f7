import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, jwksOf, signRequest, type SigningKey } from "../../core/agent-protocol/keys.ts";
import type { AgentRequest, AgentResponse, UnsignedRequest } from "../../core/agent-protocol/schemas.ts";
import { createAgent, secretsOf, type Agent, type Engine } from "../../functions/agents/core.ts";
import { mysqlEngine } from "../../functions/agents/mysql.ts";
import { postgresEngine } from "../../functions/agents/postgres.ts";
import { startMariaDb } from "../support/mariadb.ts";
import { freePort, startPostgres, type DbServer } from "../support/postgres.ts";

/** The agents against real engines: PostgreSQL 15 and MariaDB, through signed requests. */

interface Session {
  alive(): Promise<boolean>;
  close(): Promise<void>;
}

interface EngineCase {
  name: string;
  engine: Engine;
  start(): Promise<DbServer>;
  grantSelect: string;
  /** A grant on a table named like the secret: the database echoes the name in its error. */
  echoingGrant(secret: string): string;
  hasSelect(db: DbServer, username: string): Promise<boolean>;
  openSession(db: DbServer, username: string, password: string): Promise<Session>;
}

const cases: EngineCase[] = [
  {
    name: "postgres",
    engine: postgresEngine,
    start: startPostgres,
    grantSelect: "GRANT SELECT ON TABLE items TO {{username}}",
    echoingGrant: (secret) => `GRANT SELECT ON TABLE ${pg.escapeIdentifier(secret)} TO {{username}}`,
    hasSelect: async (db, username) =>
      (await db.query<{ ok: boolean }>("SELECT has_table_privilege($1, 'items', 'SELECT') AS ok", [username]))[0].ok,
    openSession: async (db, user, password) => {
      const c = new pg.Client({ host: db.host, port: db.port, database: db.database, user, password });
      c.on("error", () => {});
      await c.connect();
      return {
        alive: () => c.query("SELECT 1").then(() => true, () => false),
        close: () => c.end().catch(() => {}),
      };
    },
  },
  {
    name: "mariadb",
    engine: mysqlEngine,
    start: startMariaDb,
    grantSelect: "GRANT SELECT ON app.items TO {{username}}",
    echoingGrant: (secret) => `GRANT SELECT ON app.${mysql.escapeId(secret)} TO {{username}}`,
    hasSelect: async (db, username) => {
      const rows = await db.query<Record<string, string>>("SHOW GRANTS FOR ?@'%'", [username]).catch(() => []);
      return rows.some((r) => /GRANT SELECT ON `app`\.`items`/.test(Object.values(r)[0]));
    },
    openSession: async (db, user, password) => {
      const c = await mysql.createConnection({ host: db.host, port: db.port, database: db.database, user, password });
      c.on("error", () => {});
      return {
        alive: () => c.query("SELECT 1").then(() => true, () => false),
        close: () => c.end().catch(() => c.destroy()),
      };
    },
  },
];

let key: SigningKey;
const servers = new Map<string, DbServer>();

beforeAll(async () => {
  ({ key } = await generateSigningKey());
  const started = await Promise.allSettled(cases.map(async (c) => servers.set(c.name, await c.start())));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) throw failed.reason; // afterAll still stops the ones that did start
  for (const db of servers.values()) await db.query("CREATE TABLE items (id int)");
});

afterAll(async () => {
  await Promise.all([...servers.values()].map((db) => db.stop()));
});

const hex = () => randomBytes(4).toString("hex");
/** Passwords that break naive quoting. */
const password = () => `pw'${hex()}"\\;`;

function stringsIn(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(stringsIn);
  if (value && typeof value === "object") return Object.values(value).flatMap(stringsIn);
  return [];
}

describe.each(cases)("$name agent", (c) => {
  let db: DbServer;
  let agent: Agent;
  const target = () => ({ host: db.host, port: db.port, database: db.database });
  const managingUser = () => ({ username: db.adminUser, password: db.adminPassword });

  beforeAll(() => {
    db = servers.get(c.name)!;
    agent = createAgent(c.engine, { jwks: jwksOf(key.publicJwk), log: () => {} });
  });

  /** Every answer is checked for every password of its request, raw and as SQL would quote it. */
  async function call(request: UnsignedRequest): Promise<AgentResponse> {
    const response = await agent.handle(await signRequest(key.privateKey, key.kid, request));
    const text = stringsIn(response).join("\n");
    for (const secret of secretsOf(request as AgentRequest)) {
      for (const form of [secret, secret.replaceAll("'", "''"), secret.replaceAll("\\", "\\\\")]) expect(text).not.toContain(form);
    }
    return response;
  }

  const update = (username: string, currentPassword: string, newPassword: string) =>
    call({ type: "updateCredential", body: { ...target(), managingUser: managingUser(), rotateUser: { username, currentPassword, newPassword } } });
  const createUser = (username: string, pw: string, grants = [c.grantSelect]) =>
    call({
      type: "createUser",
      body: { ...target(), managingUser: managingUser(), user: { username, password: pw }, grants, expiresAt: new Date(Date.now() + 3_600_000).toISOString() },
    });
  const deleteUser = (username: string) => call({ type: "deleteUser", body: { ...target(), managingUser: managingUser(), username } });

  it("testCredentials: valid, wrong password, unknown user", async () => {
    const [user, pw] = [`app_${hex()}`, password()];
    await db.createLoginUser(user, pw);
    const test = (username: string, p: string) => call({ type: "testCredentials", body: { ...target(), users: [{ username, password: p }] } });
    expect(await test(user, pw)).toEqual({ status: "ok", body: { type: "valid" } });
    expect(await test(user, "wrong")).toMatchObject({ status: "ok", body: { type: "invalid", reason: expect.any(String) } });
    expect(await test(`nobody_${hex()}`, pw)).toMatchObject({ status: "ok", body: { type: "invalid" } });
  });

  it("updateCredential sets the new password; the old one stops working", async () => {
    const [user, old, next] = [`app_${hex()}`, password(), password()];
    await db.createLoginUser(user, old);
    expect(await update(user, old, next)).toEqual({ status: "ok", body: { type: "updated" } });
    expect(await db.canLogin(user, next)).toBe(true);
    expect(await db.canLogin(user, old)).toBe(false);
  });

  it("updateCredential with a wrong current password is refused and changes nothing", async () => {
    const [user, actual] = [`app_${hex()}`, password()];
    await db.createLoginUser(user, actual);
    expect(await update(user, password(), password())).toEqual({
      status: "error",
      metadata: { code: "current_credential_invalid", message: "current credential is not valid", retryable: false },
    });
    expect(await db.canLogin(user, actual)).toBe(true);
  });

  it("a retry after the change was applied converges (already_applied)", async () => {
    const [user, old, next] = [`app_${hex()}`, password(), password()];
    await db.createLoginUser(user, old);
    expect(await update(user, old, next)).toMatchObject({ status: "ok", body: { type: "updated" } });
    expect(await update(user, old, next)).toEqual({ status: "ok", body: { type: "already_applied" } });
    expect(await db.canLogin(user, next)).toBe(true);
  });

  it("createUser: the user logs in with its grant; a retry converges; another password clashes", async () => {
    const [user, pw] = [`lease_${hex()}`, password()];
    expect(await createUser(user, pw)).toEqual({ status: "ok", body: { type: "created" } });
    expect(await db.canLogin(user, pw)).toBe(true);
    expect(await c.hasSelect(db, user)).toBe(true);
    expect(await createUser(user, pw)).toEqual({ status: "ok", body: { type: "already_applied" } });
    expect(await createUser(user, password())).toMatchObject({ status: "error", metadata: { code: "user_exists", retryable: false } });
    expect(await db.canLogin(user, pw)).toBe(true);
  });

  it("createUser whose grant fails leaves no user behind, and the error carries no password", async () => {
    const [user, pw] = [`lease_${hex()}`, password()];
    // The grant names a table after the managing password, so the database's own error echoes it.
    const response = await createUser(user, pw, [c.grantSelect, c.echoingGrant(db.adminPassword)]);
    expect(response).toMatchObject({ status: "error", metadata: { code: "database_error", message: expect.stringContaining("[redacted]") } });
    expect(await db.canLogin(user, pw)).toBe(false);
  });

  it("deleteUser ends open sessions, drops the user, and is idempotent", async () => {
    const [user, pw] = [`lease_${hex()}`, password()];
    await createUser(user, pw);
    const session = await c.openSession(db, user, pw);
    try {
      expect(await session.alive()).toBe(true);
      expect(await deleteUser(user)).toEqual({ status: "ok", body: { type: "deleted", terminatedSessions: 1 } });
      await expect.poll(() => session.alive(), { timeout: 5_000 }).toBe(false);
      expect(await db.canLogin(user, pw)).toBe(false);
      expect(await deleteUser(user)).toEqual({ status: "ok", body: { type: "already_gone", terminatedSessions: 0 } });
    } finally {
      await session.close();
    }
  });

  it("renewUser extends a lease; a user that is gone is reported as such", async () => {
    const [user, pw] = [`lease_${hex()}`, password()];
    await createUser(user, pw);
    const renew = (username: string) =>
      call({ type: "renewUser", body: { ...target(), managingUser: managingUser(), username, expiresAt: "2032-05-06T07:08:09.000Z" } });
    expect(await renew(user)).toEqual({ status: "ok", body: { type: "renewed" } });
    if (c.name === "postgres") {
      const [row] = await db.query<{ until: Date }>("SELECT rolvaliduntil AS until FROM pg_roles WHERE rolname = $1", [user]);
      expect(row.until.toISOString()).toBe("2032-05-06T07:08:09.000Z");
    }
    await deleteUser(user);
    expect(await renew(user)).toMatchObject({ status: "error", metadata: { code: "user_not_found", retryable: false } });
  });

  it("names and passwords with quotes, backslashes and placeholders are handled safely", async () => {
    const user = `o'b"r\\i?$&; DROP TABLE items; --${hex()}`;
    const [pw, next] = [password(), `md5${randomBytes(16).toString("hex")}`];
    expect(await createUser(user, pw)).toEqual({ status: "ok", body: { type: "created" } });
    expect(await c.hasSelect(db, user)).toBe(true);
    expect(await update(user, pw, next)).toEqual({ status: "ok", body: { type: "updated" } });
    expect(await db.canLogin(user, next)).toBe(true);
    expect(await deleteUser(user)).toMatchObject({ status: "ok", body: { type: "deleted" } });
    expect(await db.canLogin(user, next)).toBe(false);
    expect(await db.query("SELECT count(*) AS n FROM items")).toHaveLength(1); // still there
  });

  it("reports an unreachable database as retryable and a refused managing user as such", async () => {
    const port = await freePort(); // nothing listens there
    const down = await call({
      type: "deleteUser",
      body: { ...target(), port, managingUser: managingUser(), username: "x" },
    });
    expect(down).toMatchObject({ status: "error", metadata: { code: "unavailable", retryable: true } });
    const refused = await call({
      type: "deleteUser",
      body: { ...target(), managingUser: { username: db.adminUser, password: password() }, username: "x" },
    });
    expect(refused).toMatchObject({ status: "error", metadata: { code: "managing_credential_invalid", retryable: false } });
  });
});

it("postgres: a leased user carries VALID UNTIL", async () => {
  const db = servers.get("postgres")!;
  const agent = createAgent(postgresEngine, { jwks: jwksOf(key.publicJwk) });
  const [user, expiresAt] = [`lease_${hex()}`, "2031-01-02T03:04:05.000Z"];
  const response = await agent.handle(
    await signRequest(key.privateKey, key.kid, {
      type: "createUser",
      body: {
        host: db.host, port: db.port, database: db.database,
        managingUser: { username: db.adminUser, password: db.adminPassword },
        user: { username: user, password: password() }, grants: [], expiresAt,
      },
    }),
  );
  expect(response).toEqual({ status: "ok", body: { type: "created" } });
  const [row] = await db.query<{ until: string }>("SELECT to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS until FROM pg_roles WHERE rolname = $1", [user]);
  expect(row.until).toBe("2031-01-02T03:04:05");
});

it("mariadb: names are escaped safely even when the server runs with NO_BACKSLASH_ESCAPES", async () => {
  const db = servers.get("mariadb")!;
  const agent = createAgent(mysqlEngine, { jwks: jwksOf(key.publicJwk) });
  const [user, pw] = [`o\\'b_${hex()}`, password()];
  const [{ mode }] = await db.query<{ mode: string }>("SELECT @@GLOBAL.sql_mode AS mode");
  await db.query("SET GLOBAL sql_mode = ?", [`${mode},NO_BACKSLASH_ESCAPES`]);
  let response: AgentResponse;
  try {
    response = await agent.handle(
      await signRequest(key.privateKey, key.kid, {
        type: "createUser",
        body: {
          host: db.host, port: db.port, database: db.database,
          managingUser: { username: db.adminUser, password: db.adminPassword },
          user: { username: user, password: pw }, grants: ["GRANT SELECT ON app.items TO {{username}}"],
          expiresAt: new Date(Date.now() + 60_000).toISOString(),
        },
      }),
    );
  } finally {
    await db.query("SET GLOBAL sql_mode = ?", [mode]); // new sessions only: the harness escapes with backslashes too
  }
  expect(response).toEqual({ status: "ok", body: { type: "created" } });
  expect(await db.canLogin(user, pw)).toBe(true);
  expect((await db.query<{ User: string }>("SELECT User FROM mysql.user WHERE User LIKE 'o%b\\_%'")).map((r) => r.User)).toEqual([user]);
});
