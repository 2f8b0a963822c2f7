import { randomInt } from "node:crypto";
import { generatePassword } from "../rotation/password.ts";
import type { DynamicContext, DynamicProvider, IssueRequest } from "./dynamic-types.ts";

function recipeOf(ctx: DynamicContext) {
  if (ctx.recipe.provider === "aws-iam-user") throw new Error("not a database recipe");
  return ctx.recipe;
}

const LOWER = "abcdefghijklmnopqrstuvwxyz0123456789";
/** `rotor_` + 16 chars: unique, lowercase (no quoting surprises), within MySQL's 32-char limit. */
export function leaseUsername(): string {
  let s = "rotor_";
  for (let i = 0; i < 16; i++) s += LOWER[randomInt(LOWER.length)];
  return s;
}

/**
 * Database leases through the agent: `createUser` (with the expiry the database itself
 * enforces where it can), `renewUser`, `deleteUser` (ends sessions, drops; gone = success).
 */
export function agentDatabaseDynamic(engine: "postgres" | "mysql"): DynamicProvider {
  return {
    type: engine,
    newHandle: () => ({ username: leaseUsername() }),
    async check(ctx) {
      const r = recipeOf(ctx);
      const out = await ctx.agents.call(r.agent, engine, { type: "testCredentials", body: { ...r.connection, users: [r.managingUser] } });
      if (out.type !== "valid") throw Object.assign(new Error(`the managing user cannot log in: ${out.reason}`), { code: "credentials_invalid" });
    },
    async issue(ctx, request: IssueRequest) {
      const r = recipeOf(ctx);
      const user = { username: request.handle.username, password: generatePassword() };
      await ctx.agents.call(r.agent, engine, {
        type: "createUser",
        body: { ...r.connection, managingUser: r.managingUser, user, grants: r.grants, expiresAt: request.expiresAt.toISOString() },
      });
      return {
        values: { USERNAME: user.username, PASSWORD: user.password, HOST: r.connection.host, PORT: String(r.connection.port), DATABASE: r.connection.database },
        handle: request.handle,
      };
    },
    async renew(ctx, handle, expiresAt) {
      const r = recipeOf(ctx);
      await ctx.agents.call(r.agent, engine, {
        type: "renewUser",
        body: { ...r.connection, managingUser: r.managingUser, username: handle.username, expiresAt: expiresAt.toISOString() },
      });
    },
    async revoke(ctx, handle) {
      const r = recipeOf(ctx);
      const out = await ctx.agents.call(r.agent, engine, { type: "deleteUser", body: { ...r.connection, managingUser: r.managingUser, username: handle.username } });
      return out.type === "already_gone" ? "already_gone" : "revoked";
    },
  };
}
