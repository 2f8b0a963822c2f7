import { recordActivity } from "../activity.ts";
import { AgentCallError } from "../agents/client.ts";
import { conflict, invalid, isRotorError, notFound, RotorError, tooMany, unavailable } from "../errors.ts";
import { newId } from "../ids.ts";
import { dynamicProvider } from "../providers/dynamic-index.ts";
import { configPk } from "../secrets/static.ts";
import type { Contributor, ReadEntry } from "../secrets/read.ts";
import { notifyProject } from "../rotation/notify.ts";
import type { RotationDeps } from "../rotation/model.ts";
import { ConditionFailed } from "../store/table.ts";
import { contextOf, loadDynamic } from "./manage.ts";
import { counterKey, LEASE_DUE, leaseIndexPk, leaseKey, leaseView, type DynamicItem, type DynamicRef, type LeaseItem } from "./model.ts";

/** Step Functions' Wait TimestampPath wants whole seconds; round up so a wait never ends early. */
export const waitTimestamp = (d: Date) => new Date(Math.ceil(d.getTime() / 1000) * 1000).toISOString().replace(".000Z", "Z");

export function checkTtl(item: DynamicItem, ttlSec: number | undefined): number {
  const ttl = ttlSec ?? item.defaultTtlSec;
  if (!Number.isInteger(ttl) || ttl <= 0) throw invalid(`the TTL must be a positive whole number of seconds, got ${ttlSec}`);
  if (ttl > item.maxTtlSec) throw invalid(`the TTL ${ttl}s exceeds ${item.name}'s max TTL of ${item.maxTtlSec}s`);
  return ttl;
}

async function reserve(deps: RotationDeps, item: DynamicItem) {
  const key = counterKey(item);
  try {
    await deps.table.update(key.pk, key.sk, {
      expression: "SET active = if_not_exists(active, :zero) + :one",
      condition: "attribute_not_exists(active) OR active < :cap",
      values: { ":zero": 0, ":one": 1, ":cap": item.maxLeases },
    });
  } catch (e) {
    if (e instanceof ConditionFailed) throw tooMany(`${item.name} has ${item.maxLeases} active leases, its cap: revoke some or raise maxLeases`);
    throw e;
  }
}

async function release(deps: RotationDeps, ref: DynamicRef) {
  const key = counterKey(ref);
  await deps.table.update(key.pk, key.sk, { expression: "SET active = active - :one", condition: "active > :zero", values: { ":one": 1, ":zero": 0 } }).catch((e) => {
    if (!(e instanceof ConditionFailed)) throw e;
  });
}

function providerError(e: unknown, what: string): never {
  // Deleted outside Rotor: nothing to renew; revoking it counts as done.
  if (e instanceof AgentCallError && e.agentCode === "user_not_found") throw new RotorError("lease_gone", `${what}: ${e.message}`, 409);
  if (e instanceof AgentCallError) throw new RotorError("lease_failed", `${what}: ${e.message}`, e.retryable ? 503 : 502, e.retryable);
  if (isRotorError(e)) throw e;
  throw unavailable(`${what}: ${(e as Error).message}`);
}

/**
 * Leases one new credential. The lease is stored (with the credential's name) before the
 * credential exists, so a crash anywhere leaves a record the reconciler revokes.
 */
export async function issueLease(deps: RotationDeps, item: DynamicItem, ttlSec: number | undefined, actor: string) {
  const ttl = checkTtl(item, ttlSec);
  const provider = dynamicProvider(item.provider);
  const ctx = await contextOf(deps, item);
  await reserve(deps, item);
  const now = deps.now();
  const leaseId = newId("lease");
  const expiresAt = new Date(now.getTime() + ttl * 1000);
  const lease: LeaseItem = {
    ...leaseKey(leaseId),
    kind: "lease",
    leaseId,
    project: item.project,
    config: item.config,
    dynamic: item.name,
    provider: item.provider,
    handle: provider.newHandle(),
    state: "issuing",
    createdAt: now.toISOString(),
    expiresAt: expiresAt.toISOString(),
    maxExpiresAt: new Date(now.getTime() + item.maxTtlSec * 1000).toISOString(),
    revokeFailures: 0,
    gsi1pk: LEASE_DUE,
    gsi1sk: `${expiresAt.toISOString()}#${leaseId}`,
  };
  // The index row goes in with the record: a lease stuck half-issued still shows in `leases list`.
  await Promise.all([deps.table.put(lease), deps.table.put({ pk: leaseIndexPk(item), sk: leaseId, kind: "lease-index", leaseId, createdAt: lease.createdAt })]);
  let issued;
  try {
    issued = await provider.issue(ctx, { leaseId, expiresAt, handle: lease.handle });
  } catch (e) {
    // Nothing usable was handed out. An agent's definite refusal made nothing (and a
    // `user_exists` name belongs to someone else: never drop it). But a lost answer (the
    // connection dropped after COMMIT) can hide a created user: then revoke by name
    // (idempotent) before closing the lease. If even that fails, the record stays due at
    // its expiry and the reconciler revokes it then.
    const definite = e instanceof AgentCallError && !e.retryable;
    const gone = definite || (await provider.revoke(ctx, lease.handle).then(() => true, () => false));
    if (gone) {
      await deps.table.update(lease.pk, lease.sk, { expression: "SET #s = :r, revokedAt = :at REMOVE gsi1pk, gsi1sk", names: { "#s": "state" }, values: { ":r": "revoked", ":at": deps.now().toISOString() } });
      await release(deps, item);
    }
    providerError(e, `could not lease ${item.name}`);
  }
  try {
    await deps.table.update(lease.pk, lease.sk, {
      expression: "SET #s = :a, handle = :h",
      condition: "#s = :issuing",
      names: { "#s": "state" },
      values: { ":a": "active", ":h": issued.handle, ":issuing": "issuing" },
    });
  } catch (e) {
    if (!(e instanceof ConditionFailed)) throw e;
    // Issuing outlasted the TTL and the reconciler closed the lease: the new credential must go too.
    await provider.revoke(ctx, issued.handle).catch((err) => console.error(`lease ${leaseId}: ${credentialOf({ ...lease, handle: issued.handle })} outlived its lease and could not be revoked: ${(err as Error).message}`));
    throw new RotorError("lease_expired", `issuing ${item.name} took longer than its TTL of ${ttl}s: ask for a longer TTL`, 503, true);
  }
  await Promise.all([
    deps.workflows.start("lease", leaseId, { leaseId, expiresAt: waitTimestamp(expiresAt) }),
    recordActivity(deps, {
      type: "lease.created",
      actor,
      project: item.project,
      config: item.config,
      changeId: `lease-${leaseId}`,
      at: lease.createdAt,
      detail: { leaseId, dynamic: item.name, provider: item.provider, username: issued.handle.username ?? issued.handle.userName, expiresAt: lease.expiresAt },
    }),
  ]);
  const values: Record<string, string> = {};
  for (const [suffix, v] of Object.entries(issued.values)) values[`${item.name}_${suffix}`] = v;
  values[`${item.name}_LEASE_ID`] = leaseId;
  values[`${item.name}_LEASE_EXPIRATION`] = lease.expiresAt;
  return { leaseId, expiresAt: lease.expiresAt, values };
}

/** Reads with include_dynamic_secrets lease one credential per dynamic secret of the config. */
export const dynamicContributor: Contributor = async (deps, project, config, opts) => {
  if (!opts.includeDynamic) return {};
  const rdeps = deps as RotationDeps;
  const items = await deps.table.queryPrefix<DynamicItem>(configPk(project, config), "DYNAMIC#");
  for (const item of items) checkTtl(item, opts.dynamicTtlSec); // refuse before leasing anything
  const out: Record<string, ReadEntry> = {};
  const issued: string[] = [];
  try {
    for (const item of items) {
      const lease = await issueLease(rdeps, item, opts.dynamicTtlSec, opts.actor);
      issued.push(lease.leaseId);
      for (const [k, v] of Object.entries(lease.values)) out[k] = { value: v, source: "dynamic" };
    }
  } catch (e) {
    // All or nothing: a reader gets every dynamic credential or none, and nothing is left behind.
    await Promise.allSettled(issued.map((id) => revokeLease(rdeps, id, { actor: "rotor:lease" })));
    throw e;
  }
  return out;
};

export async function loadLease(deps: RotationDeps, leaseId: string): Promise<LeaseItem> {
  const item = await deps.table.get<LeaseItem>(leaseKey(leaseId).pk, leaseKey(leaseId).sk);
  if (!item) throw notFound(`lease '${leaseId}' does not exist`);
  return item;
}

export async function renewLease(deps: RotationDeps, actor: string, leaseId: string, ttlSec: number) {
  const lease = await loadLease(deps, leaseId);
  if (lease.state !== "active") throw invalid(`lease ${leaseId} is ${lease.state}: only active leases renew`);
  if (!Number.isInteger(ttlSec) || ttlSec <= 0) throw invalid("the TTL must be a positive whole number of seconds");
  const now = deps.now();
  // An expired credential is being revoked; bringing it back would race that revocation.
  if (new Date(lease.expiresAt) <= now) throw invalid(`lease ${leaseId} expired at ${lease.expiresAt}: lease a new credential instead`);
  const wanted = new Date(now.getTime() + ttlSec * 1000);
  const expiresAt = wanted > new Date(lease.maxExpiresAt) ? new Date(lease.maxExpiresAt) : wanted;
  const item = await loadDynamic(deps, { project: lease.project, config: lease.config, name: lease.dynamic });
  try {
    await dynamicProvider(lease.provider).renew(await contextOf(deps, item), lease.handle, expiresAt);
  } catch (e) {
    providerError(e, `could not renew ${leaseId}`);
  }
  try {
    await deps.table.update(lease.pk, lease.sk, {
      expression: "SET expiresAt = :e, gsi1sk = :g",
      condition: "#s = :active",
      names: { "#s": "state" },
      values: { ":e": expiresAt.toISOString(), ":g": `${expiresAt.toISOString()}#${leaseId}`, ":active": "active" },
    });
  } catch (e) {
    if (e instanceof ConditionFailed) throw invalid(`lease ${leaseId} was revoked meanwhile`);
    throw e;
  }
  await recordActivity(deps, { type: "lease.renewed", actor, project: lease.project, config: lease.config, changeId: `renew-${leaseId}-${expiresAt.toISOString()}`, detail: { leaseId, expiresAt: expiresAt.toISOString(), clamped: expiresAt < wanted } });
  return { ...leaseView({ ...lease, expiresAt: expiresAt.toISOString() }), clampedToMaxTtl: expiresAt < wanted };
}

/**
 * Revokes a lease's credential. Idempotent: revoking a revoked lease, or a credential that
 * is already gone, succeeds. With `force`, the record is closed even if the target can't be
 * reached; the answer says what may be left behind.
 */
export async function revokeLease(deps: RotationDeps, leaseId: string, opts: { actor: string; force?: boolean }) {
  const lease = await loadLease(deps, leaseId);
  if (lease.state === "revoked") return { ...leaseView(lease), outcome: "already_revoked" as const, leftBehind: null };
  // Mid-issue, the credential may not exist yet: revoking now would let it appear after. Past
  // expiry the issuer is presumed dead (the reconciler's case) and revoking is safe.
  if (lease.state === "issuing" && new Date(lease.expiresAt) > deps.now() && !opts.force) throw conflict(`lease ${leaseId} is still being issued: try again in a moment`);
  let outcome: "revoked" | "already_gone" | "forced";
  let leftBehind: string | null = null;
  try {
    const item = await loadDynamic(deps, { project: lease.project, config: lease.config, name: lease.dynamic });
    outcome = await dynamicProvider(lease.provider).revoke(await contextOf(deps, item), lease.handle);
  } catch (e) {
    if (!opts.force) providerError(e, `could not revoke ${leaseId}`);
    outcome = "forced";
    leftBehind = `${credentialOf(lease)} may still exist${lease.provider === "postgres" ? ` (its VALID UNTIL is ${lease.expiresAt})` : ""}`;
  }
  const at = deps.now().toISOString();
  let transitioned = true;
  try {
    await deps.table.update(lease.pk, lease.sk, {
      expression: "SET #s = :r, revokedAt = :at, forced = :f REMOVE gsi1pk, gsi1sk",
      condition: "#s <> :r",
      names: { "#s": "state" },
      values: { ":r": "revoked", ":at": at, ":f": outcome === "forced" },
    });
  } catch (e) {
    if (!(e instanceof ConditionFailed)) throw e;
    transitioned = false; // someone else revoked it first; they released the slot
  }
  if (transitioned) {
    await release(deps, { project: lease.project, config: lease.config, name: lease.dynamic });
    await recordActivity(deps, {
      type: "lease.revoked",
      actor: opts.actor,
      project: lease.project,
      config: lease.config,
      changeId: `revoke-${leaseId}`,
      detail: { leaseId, dynamic: lease.dynamic, outcome, ...(leftBehind ? { leftBehind } : {}) },
    });
  }
  return { ...leaseView({ ...lease, state: "revoked", revokedAt: at }), outcome, leftBehind };
}

/** Names a lease's credential for people: what to look for if it was left behind. */
function credentialOf(lease: LeaseItem): string {
  if (lease.provider === "aws-iam-user") return `IAM user ${lease.handle.userName} (path /rotor/)`;
  return `${lease.provider} user ${lease.handle.username} in ${lease.project}/${lease.config}/${lease.dynamic}'s database`;
}

/** The lease workflow's check after each wait: a renewal moved the expiry, or it's time. */
export async function checkLease(deps: RotationDeps, leaseId: string) {
  const lease = await deps.table.get<LeaseItem>(leaseKey(leaseId).pk, leaseKey(leaseId).sk);
  if (!lease || lease.state === "revoked") return { action: "done" as const };
  const expiresAt = new Date(lease.expiresAt);
  if (expiresAt.getTime() > deps.now().getTime()) return { action: "wait" as const, expiresAt: waitTimestamp(expiresAt) };
  return { action: "revoke" as const };
}

/** Revocation failed after its retries: count it, alert once stuck, back off (capped), and go on. */
export async function recordRevokeFailure(deps: RotationDeps, leaseId: string, error: { Error: string; Cause?: string }) {
  const at = deps.now().toISOString();
  let updated;
  try {
    updated = await deps.table.update(leaseKey(leaseId).pk, leaseKey(leaseId).sk, {
      expression: "SET revokeFailures = if_not_exists(revokeFailures, :zero) + :one, lastError = :err",
      condition: "attribute_exists(pk)", // never create a stray record for a lease that isn't there
      values: { ":zero": 0, ":one": 1, ":err": { code: error.Error, message: (error.Cause ?? "").slice(0, 300), at } },
    });
  } catch (e) {
    if (e instanceof ConditionFailed) return { failures: 0, waitSeconds: deps.settings.backoffBaseSec };
    throw e;
  }
  const n = Number(updated.revokeFailures);
  const threshold = deps.settings.failureThreshold;
  if (n === threshold) {
    await deps.table.update(leaseKey(leaseId).pk, leaseKey(leaseId).sk, { expression: "SET stuck = :t", values: { ":t": true } });
    const lease = updated as unknown as LeaseItem;
    const what = `${credentialOf(lease)} (lease ${leaseId})`;
    await recordActivity(deps, { type: "lease.stuck", actor: "rotor:lease", project: lease.project, config: lease.config, changeId: `stuck-${leaseId}`, detail: { leaseId, dynamic: lease.dynamic, failures: n, error: error.Error } });
    await notifyProject(deps, lease.project, {
      subject: `Rotor: cannot revoke ${what}`,
      text: `Revoking ${what} has failed ${n} times (last error: ${error.Error}). Rotor keeps retrying; the credential stays valid until it succeeds.`,
    }).catch((e) => console.error(`lease alert email failed: ${(e as Error).message}`));
  }
  const waitSeconds = Math.min(deps.settings.backoffBaseSec * 2 ** Math.min(n - 1, 20), deps.settings.backoffCapSec);
  // The due index is read oldest first, a page at a time: a lease that keeps failing moves to
  // its next attempt, so a pile of stuck leases can never hide newer expired ones from the reconciler.
  const nextAttempt = new Date(deps.now().getTime() + waitSeconds * 1000).toISOString();
  await deps.table
    .update(leaseKey(leaseId).pk, leaseKey(leaseId).sk, { expression: "SET gsi1sk = :sk", condition: "attribute_exists(gsi1pk)", values: { ":sk": `${nextAttempt}#${leaseId}` } })
    .catch((e) => {
      if (!(e instanceof ConditionFailed)) throw e; // revoked meanwhile: it left the index
    });
  return { failures: n, waitSeconds };
}

export async function listLeases(deps: RotationDeps, filter: { project: string; config: string; dynamic?: string; includeRevoked?: boolean }) {
  const names = filter.dynamic
    ? [(await loadDynamic(deps, { project: filter.project, config: filter.config, name: filter.dynamic })).name]
    : (await deps.table.queryPrefix<DynamicItem>(configPk(filter.project, filter.config), "DYNAMIC#")).map((d) => d.name);
  const out = [];
  for (const name of names) {
    const index = await deps.table.queryPrefix(leaseIndexPk({ project: filter.project, config: filter.config, name }), "");
    const leases = await Promise.all(index.map((i) => deps.table.get<LeaseItem>(leaseKey(String(i.leaseId)).pk, "LEASE")));
    for (const l of leases) if (l && (filter.includeRevoked || l.state !== "revoked")) out.push(leaseView(l));
  }
  return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
}

/**
 * Finds leases past expiry that nothing is revoking (the process that waited on them
 * died) and revokes them. `isHandled` says whether a live workflow owns the lease.
 */
export async function reconcileLeases(deps: RotationDeps, isHandled: (leaseId: string) => boolean, graceMs = 0) {
  const until = new Date(deps.now().getTime() - graceMs).toISOString();
  const due = await deps.table.queryDue<LeaseItem>(LEASE_DUE, until + "\uffff", 500);
  let revoked = 0;
  for (const lease of due) {
    if (lease.state === "revoked" || isHandled(lease.leaseId)) continue;
    try {
      await revokeLease(deps, lease.leaseId, { actor: "rotor:reconciler" });
      revoked++;
    } catch (e) {
      await recordRevokeFailure(deps, lease.leaseId, { Error: (e as Error).name, Cause: (e as Error).message }).catch(() => undefined);
    }
  }
  return revoked;
}
