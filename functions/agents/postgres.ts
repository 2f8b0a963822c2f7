import { createHash, createHmac, pbkdf2, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import pg from "pg";
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

/** The PostgreSQL agent. One fresh connection per call: customer credentials are never pooled. */


// 28P01: wrong password (or VALID UNTIL passed); 28000: no such role, NOLOGIN, or pg_hba refusal.
const REFUSED_LOGIN = new Set(["28P01", "28000"]);
// Serialization, lock, resource and shutdown failures: the same statement may work later.
const RETRYABLE = /^(40|53|55P03|57P0)/;

async function withClient<T>(t: DatabaseTarget, user: string, password: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    host: t.host,
    port: t.port,
    database: t.database,
    user,
    password,
    ssl: tlsOptions(t.ssl),
    connectionTimeoutMillis: 5_000,
    statement_timeout: 15_000,
    query_timeout: 20_000,
    application_name: "rotor-agent",
  });
  client.on("error", () => {}); // a connection dropped by the server must not crash the agent
  try {
    try {
      await client.connect();
    } catch (e) {
      if (e instanceof pg.DatabaseError && REFUSED_LOGIN.has(e.code ?? "")) throw new LoginRefused(e.message);
      throw e;
    }
    return await fn(client);
  } catch (e) {
    throw translate(e);
  } finally {
    await client.end().catch(() => {});
  }
}

function translate(e: unknown): unknown {
  if (e instanceof AgentError || e instanceof LoginRefused) return e;
  if (isNetworkError(e)) return unavailable(e);
  if (e instanceof pg.DatabaseError) {
    const code = e.code ?? "";
    return new AgentError("database_error", `${code}: ${e.message}`, RETRYABLE.test(code));
  }
  return e;
}

const login = (t: DatabaseTarget, username: string, password: string) =>
  probeLogin(() => withClient(t, username, password, async (c) => (await c.query("SELECT 1"), username)));

const asManager = <T>(body: ManagedTarget, fn: (c: pg.Client) => Promise<T>) =>
  asManagingUser(() => withClient(body, body.managingUser.username, body.managingUser.password, fn));

const pbkdf2Async = promisify(pbkdf2);

/**
 * Hash the password here (as psql's \password does), so the cleartext never reaches the
 * server's statement log. Only printable ASCII: SASLprep leaves it unchanged, so our
 * verifier matches what the server would compute. Anything else goes as is.
 */
async function passwordLiteral(c: pg.Client, password: string): Promise<string> {
  const { rows } = await c.query<{ password_encryption: string }>("SHOW password_encryption");
  if (rows[0]?.password_encryption !== "scram-sha-256" || !/^[\x20-\x7e]+$/.test(password)) return pg.escapeLiteral(password);
  const salt = randomBytes(16);
  const iterations = 4096;
  // Off the event loop: an in-process agent (embedded mode) shares it with the API and workflows.
  const salted = await pbkdf2Async(password, salt, iterations, 32, "sha256");
  const storedKey = createHash("sha256").update(createHmac("sha256", salted).update("Client Key").digest()).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  const b64 = (b: Buffer) => b.toString("base64");
  return pg.escapeLiteral(`SCRAM-SHA-256$${iterations}:${b64(salt)}$${b64(storedKey)}:${b64(serverKey)}`);
}

/**
 * Leases of one recipe grant on the same objects: two transactions changing one object's ACL
 * at once make PostgreSQL fail one with "tuple concurrently updated" (XX000, not retryable by
 * code). Grants and DROP OWNED (which revokes) take this transaction-scoped lock first.
 */
const GRANT_LOCK = 0x526f746f; // "Roto"
const lockGrants = (c: pg.Client) => c.query("SELECT pg_advisory_xact_lock($1)", [GRANT_LOCK]);

const isPg = (e: unknown, code: string) => e instanceof pg.DatabaseError && e.code === code;
const ident = (name: string) => pg.escapeIdentifier(name);

export const postgresEngine: Engine = {
  status: async () => ({ type: "ok", engine: "postgres", version: AGENT_PROTOCOL_VERSION }),

  testCredentials: (body) => testLogins(body, (u, p) => login(body, u, p)),

  updateCredential: (body) =>
    rotatePassword(body, {
      login: (u, p) => login(body, u, p),
      setPassword: (role, newPassword) =>
        asManager(body, async (c) => {
          await c.query(`ALTER ROLE ${ident(role)} WITH PASSWORD ${await passwordLiteral(c, newPassword)}`);
        }),
    }),

  createUser: async (body) => {
    const { username, password } = body.user;
    const created = await asManager(body, async (c) => {
      // One transaction: a failed grant leaves no half-made user behind.
      await c.query("BEGIN");
      try {
        await lockGrants(c);
        await c.query(
          `CREATE ROLE ${ident(username)} LOGIN PASSWORD ${await passwordLiteral(c, password)} VALID UNTIL ${pg.escapeLiteral(body.expiresAt)}`,
        );
        for (const grant of body.grants) await c.query(renderGrant(grant, ident(username)));
        await c.query("COMMIT");
        return true;
      } catch (e) {
        await c.query("ROLLBACK").catch(() => {});
        if (isPg(e, "42710")) return false; // duplicate_object: the role exists
        throw e;
      }
    });
    if (created) return { type: "created" };
    // A retry of a create that committed: same name, same password. Anything else is a clash.
    if ((await login(body, username, password)).ok) return { type: "already_applied" };
    throw new AgentError("user_exists", `user ${JSON.stringify(username)} already exists`);
  },

  deleteUser: (body) =>
    asManager(body, async (c) => {
      const role = ident(body.username);
      const gone = { type: "already_gone", terminatedSessions: 0 } as const;
      const exists = await c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [body.username]);
      if (exists.rowCount === 0) return gone;
      try {
        // Ending its sessions and REASSIGN both need membership in the role: a non-superuser
        // managing user (RDS, CREATEROLE) grants it to itself first. It goes with the role.
        const member = await c.query<{ has: boolean }>("SELECT pg_has_role(current_user, $1, 'USAGE') AS has", [body.username]);
        if (!member.rows[0]?.has) await c.query(`GRANT ${role} TO CURRENT_USER`);
        // Outside the transaction, so no new session can start while we end the open ones.
        await c.query(`ALTER ROLE ${role} NOLOGIN`);
        const { rows } = await c.query<{ n: number }>(
          "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE usename = $1",
          [body.username],
        );
        await c.query("BEGIN");
        await lockGrants(c);
        await c.query(`REASSIGN OWNED BY ${role} TO CURRENT_USER`);
        await c.query(`DROP OWNED BY ${role}`);
        await c.query(`DROP ROLE IF EXISTS ${role}`);
        await c.query("COMMIT");
        return { type: "deleted", terminatedSessions: rows[0]?.n ?? 0 };
      } catch (e) {
        await c.query("ROLLBACK").catch(() => {});
        if (isPg(e, "42704")) return gone; // dropped concurrently: revocation is idempotent
        throw e;
      }
    }),

  renewUser: (body) =>
    asManager(body, async (c) => {
      try {
        await c.query(`ALTER ROLE ${ident(body.username)} VALID UNTIL ${pg.escapeLiteral(body.expiresAt)}`);
      } catch (e) {
        if (isPg(e, "42704")) throw new AgentError("user_not_found", `user ${JSON.stringify(body.username)} does not exist`);
        throw e;
      }
      return { type: "renewed" } as const;
    }),
};

export const { agent, handler, main } = agentEntryPoints(postgresEngine, "postgres", import.meta.url);
