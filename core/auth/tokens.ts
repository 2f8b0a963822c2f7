import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { recordActivity } from "../activity.ts";
import type { Deps } from "../context.ts";
import { forbidden, notFound, unauthorized } from "../errors.ts";
import { newId } from "../ids.ts";
import { requireConfig } from "../projects.ts";
import type { Item } from "../store/table.ts";

/**
 * API tokens. Only SHA-256 hashes are stored. The auth item is keyed by the hash (the
 * authority for every request); an index item keyed by id serves listing and revocation.
 */
export type Access = "read" | "read/write";
export interface Principal {
  tokenId: string;
  kind: "admin" | "service";
  project?: string;
  config?: string;
  access: Access;
  name?: string;
}
interface TokenItem extends Item, Principal {
  hash: string;
  createdAt: string;
  revokedAt?: string;
}

const hashOf = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");
const authKey = (hash: string) => ({ pk: `TOKEN#${hash}`, sk: "TOKEN" });
const indexKey = (id: string) => ({ pk: "TOKENS", sk: `TOKEN#${id}` });

export async function createToken(
  deps: Deps,
  actor: string,
  input: { kind: "admin" } | { kind: "service"; project: string; config: string; access: Access; name?: string },
): Promise<{ token: string; id: string }> {
  if (input.kind === "service") await requireConfig(deps, input.project, input.config);
  const token = `rtr_${input.kind === "admin" ? "admin" : "svc"}_${randomBytes(32).toString("base64url")}`;
  const id = newId("tok", 8);
  const hash = hashOf(token);
  const item: TokenItem = {
    ...authKey(hash),
    kind: input.kind,
    tokenId: id,
    hash,
    access: input.kind === "admin" ? "read/write" : input.access,
    project: input.kind === "service" ? input.project : undefined,
    config: input.kind === "service" ? input.config : undefined,
    name: input.kind === "service" ? input.name : "admin",
    createdAt: deps.now().toISOString(),
  };
  await deps.table.put(item, { expression: "attribute_not_exists(pk)" });
  await deps.table.put({ ...item, ...indexKey(id) });
  await recordActivity(deps, {
    type: "token.created",
    actor,
    project: item.project,
    config: item.config,
    changeId: `create-${id}`,
    detail: { id, kind: item.kind, access: item.access },
  });
  return { token, id };
}

export async function authenticate(deps: Deps, token: string | undefined): Promise<Principal> {
  if (!token) throw unauthorized("missing bearer token");
  const hash = hashOf(token);
  const item = await deps.table.get<TokenItem>(authKey(hash).pk, authKey(hash).sk);
  // The lookup is by hash, so timing reveals nothing about the token; the explicit
  // constant-time check guards against a store that matched loosely.
  if (!item || !timingSafeEqual(Buffer.from(item.hash, "hex"), Buffer.from(hash, "hex"))) throw unauthorized("invalid token");
  if (item.revokedAt) throw unauthorized("token has been revoked");
  return { tokenId: item.tokenId, kind: item.kind, project: item.project, config: item.config, access: item.access, name: item.name };
}

export async function listTokens(deps: Deps) {
  const items = await deps.table.queryPrefix<TokenItem>("TOKENS", "TOKEN#");
  return items.map((i) => ({
    id: i.tokenId,
    kind: i.kind,
    project: i.project,
    config: i.config,
    access: i.access,
    name: i.name,
    createdAt: i.createdAt,
    revokedAt: i.revokedAt,
  }));
}

export async function revokeToken(deps: Deps, actor: string, id: string) {
  const index = await deps.table.get<TokenItem>(indexKey(id).pk, indexKey(id).sk);
  if (!index) throw notFound(`token '${id}' does not exist`);
  const at = deps.now().toISOString();
  await deps.table.update(authKey(index.hash).pk, authKey(index.hash).sk, {
    expression: "SET revokedAt = if_not_exists(revokedAt, :at)",
    values: { ":at": at },
  });
  await deps.table.update(indexKey(id).pk, indexKey(id).sk, { expression: "SET revokedAt = if_not_exists(revokedAt, :at)", values: { ":at": at } });
  await recordActivity(deps, { type: "token.revoked", actor, project: index.project, config: index.config, changeId: `revoke-${id}`, detail: { id } });
}

/** Scope rules: admins do anything; a service token touches only its own config, writes only with read/write. */
export function authorizeConfig(p: Principal, project: string, config: string, need: "read" | "write") {
  if (p.kind === "admin") return;
  if (p.project !== project || p.config !== config) throw forbidden(`this token is scoped to ${p.project}/${p.config}`);
  if (need === "write" && p.access !== "read/write") throw forbidden("this token is read-only");
}

export function requireAdmin(p: Principal) {
  if (p.kind !== "admin") throw forbidden("this operation needs an admin token");
}

export const actorOf = (p: Principal) => `${p.kind}:${p.tokenId}`;
