import mysql from "mysql2/promise";
import { AGENT_PROTOCOL_VERSION } from "../../core/agent-protocol/schemas.ts";
import {
  AgentError,
  asManagingUser,
  agentEntryPoints,
  isNetworkError,
  LoginRefused,
  probeLogin,
  renderGrant,
  rotatePassword,
  testLogins,
  tlsOptions,
  unavailable,
  type DatabaseTarget,
  type Engine,
  type ManagedTarget,
} from "./core.ts";

/** The MySQL / MariaDB agent. One fresh connection per call: customer credentials are never pooled. */


// Access denied, no access to the database, password expired, account locked (MySQL, MariaDB).
const REFUSED_LOGIN = new Set([1044, 1045, 1862, 3118, 4151]);
const ER_CANNOT_USER = 1396; // CREATE USER of an existing / DROP USER of a missing account
const ER_NO_SUCH_THREAD = 1094;
const RETRYABLE = new Set([1205, 1213, 1040]); // lock wait timeout, deadlock, too many connections

const errnoOf = (e: unknown) => (e as { errno?: unknown }).errno;

async function withConnection<T>(t: DatabaseTarget, user: string, password: string, fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  let c: mysql.Connection | undefined;
  try {
    try {
      c = await mysql.createConnection({
        host: t.host,
        port: t.port,
        database: t.database,
        user,
        password,
        ssl: tlsOptions(t.ssl),
        connectTimeout: 5_000,
        charset: "utf8mb4", // a multibyte charset like GBK would break backslash escaping
        multipleStatements: false,
      });
    } catch (e) {
      // Only at connect time: the same error numbers later mean a statement was refused.
      if (REFUSED_LOGIN.has(errnoOf(e) as number)) throw new LoginRefused((e as Error).message);
      throw e;
    }
    c.on("error", () => {}); // a connection killed by the server must not crash the agent
    return await fn(c);
  } catch (e) {
    throw translate(e);
  } finally {
    await c?.end().catch(() => c?.destroy());
  }
}

function translate(e: unknown): unknown {
  if (e instanceof AgentError || e instanceof LoginRefused) return e;
  if (isNetworkError(e)) return unavailable(e);
  const errno = errnoOf(e);
  if (typeof errno !== "number") return e;
  return new AgentError("database_error", `${errno}: ${(e as Error).message}`, RETRYABLE.has(errno));
}


/** As the managing user, with backslash escaping guaranteed: mysql2 escapes values with backslashes. */
const asManager = <T>(body: ManagedTarget, fn: (c: mysql.Connection) => Promise<T>) =>
  asManagingUser(() =>
    withConnection(body, body.managingUser.username, body.managingUser.password, async (c) => {
      const [rows] = await c.query<mysql.RowDataPacket[]>("SELECT @@SESSION.sql_mode AS mode");
      const modes = String(rows[0]?.mode ?? "").split(",");
      if (modes.includes("NO_BACKSLASH_ESCAPES")) {
        await c.query("SET SESSION sql_mode = ?", [modes.filter((m) => m !== "NO_BACKSLASH_ESCAPES").join(",")]);
      }
      return fn(c);
    }),
  );

/** Logs in; the account is CURRENT_USER() (`user@host`), the exact row the server matched. */
const login = (t: DatabaseTarget, username: string, password: string) =>
  probeLogin(() =>
    withConnection(t, username, password, async (c) => {
      const [rows] = await c.query<mysql.RowDataPacket[]>("SELECT CURRENT_USER() AS account");
      const account = String(rows[0]?.account);
      const at = account.lastIndexOf("@");
      return { user: account.slice(0, at), host: account.slice(at + 1) };
    }),
  );

// Always one mysql.format pass over the whole statement: a `?` inside an escaped name stays a character.
const anyHost = (username: string) => mysql.format("?@'%'", [username]);

export const mysqlEngine: Engine = {
  status: async () => ({ type: "ok", engine: "mysql", version: AGENT_PROTOCOL_VERSION }),

  testCredentials: (body) => testLogins(body, (u, p) => login(body, u, p)),

  updateCredential: (body) =>
    rotatePassword(body, {
      login: (u, p) => login(body, u, p),
      setPassword: (account, newPassword) =>
        asManager(body, async (c) => {
          await c.query(mysql.format("ALTER USER ?@? IDENTIFIED BY ?", [account.user, account.host, newPassword]));
        }),
    }),

  createUser: (body) =>
    asManager(body, async (c) => {
      const { username, password } = body.user;
      const account = anyHost(username);
      const grant = async () => {
        for (const g of body.grants) await c.query(renderGrant(g, account));
      };
      try {
        await c.query(mysql.format("CREATE USER ?@'%' IDENTIFIED BY ?", [username, password]));
      } catch (e) {
        if (errnoOf(e) !== ER_CANNOT_USER) throw e;
        // A retry of a create that got through: same name, same password. DDL is not
        // transactional here, so grants are applied again (GRANT is idempotent).
        if (!(await login(body, username, password)).ok) {
          throw new AgentError("user_exists", `user ${JSON.stringify(username)} already exists`);
        }
        await grant();
        return { type: "already_applied" } as const;
      }
      try {
        await grant();
      } catch (e) {
        await c.query(`DROP USER IF EXISTS ${account}`).catch(() => {}); // no half-made user
        throw e;
      }
      return { type: "created" } as const;
    }),

  deleteUser: (body) =>
    asManager(body, async (c) => {
      // Drop first, then end sessions: once dropped, a killed client cannot log back in.
      // Open sessions of a dropped user stay alive in MySQL until killed.
      let gone = false;
      try {
        await c.query(`DROP USER ${anyHost(body.username)}`);
      } catch (e) {
        if (errnoOf(e) !== ER_CANNOT_USER) throw e;
        gone = true;
      }
      const [rows] = await c.query<mysql.RowDataPacket[]>("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", [
        body.username,
      ]);
      let terminated = 0;
      for (const { ID } of rows) {
        try {
          await c.query("KILL CONNECTION ?", [Number(ID)]);
          terminated++;
        } catch (e) {
          if (errnoOf(e) !== ER_NO_SUCH_THREAD) throw e; // it ended by itself
        }
      }
      return { type: gone ? "already_gone" : "deleted", terminatedSessions: terminated };
    }),

  // MySQL has no login expiry (Rotor's revocation ends the lease): renewing only checks the user is still there.
  // SHOW GRANTS FOR another account needs SELECT on `mysql`.*; a no-op ALTER USER needs only CREATE USER, which the managing user has.
  renewUser: (body) =>
    asManager(body, async (c) => {
      try {
        await c.query(`ALTER USER ${anyHost(body.username)} ACCOUNT UNLOCK`);
      } catch (e) {
        if (errnoOf(e) === ER_CANNOT_USER) throw new AgentError("user_not_found", `user ${JSON.stringify(body.username)} does not exist`);
        throw e;
      }
      return { type: "renewed" } as const;
    }),
};

export const { agent, handler, main } = agentEntryPoints(mysqlEngine, "mysql", import.meta.url);
