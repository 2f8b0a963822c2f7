import { recordActivity } from "../activity.ts";
import { AgentCallError } from "../agents/client.ts";
import { rotationProvider } from "../providers/index.ts";
import type { Credential, Target } from "../providers/types.ts";
import { isRotorError } from "../errors.ts";
import { ConditionFailed } from "../store/table.ts";
import { notifyProject } from "./notify.ts";
import {
  loadRotated,
  openInstance,
  openManaging,
  refOf,
  saveRotated,
  sealBinding,
  type Flip,
  type RotatedItem,
  type RotationDeps,
  type SecretRef,
} from "./model.ts";
import { nextFlipAfter } from "./schedule.ts";

/**
 * The four steps of a flip (DESIGN.md "Rotation"), each an idempotent function of
 * (secret, flip token) that the workflow's Task states call, plus the failure and pause
 * paths. Errors carry a `name` the state machine routes on; messages never contain a value.
 */
export type FlipErrorName = "Retryable" | "ValueRejected" | "ExternalChange" | "FlipInProgress" | "NotDue" | "Paused" | "FlipLost";

export class FlipError extends Error {
  constructor(name: FlipErrorName, message: string) {
    super(message);
    this.name = name;
  }
}

export interface StepInput {
  ref: SecretRef;
  token: string;
}

/** The item a flip works on; a secret deleted under a running flip ends that flip (Skipped), it is no failure. */
async function loadForFlip(deps: RotationDeps, ref: SecretRef): Promise<RotatedItem> {
  try {
    return await loadRotated(deps, ref);
  } catch (e) {
    if (isRotorError(e) && e.status === 404) throw new FlipError("FlipLost", "the rotated secret was deleted");
    throw e;
  }
}

/** Read, change, conditional put; re-reads when another writer got in between. */
async function mutate(deps: RotationDeps, ref: SecretRef, change: (item: RotatedItem) => Promise<RotatedItem | undefined> | RotatedItem | undefined) {
  for (let attempt = 0; ; attempt++) {
    const item = await loadForFlip(deps, ref);
    const after = await change(item);
    if (!after) return item;
    try {
      return await saveRotated(deps, item, after);
    } catch (e) {
      if (!(e instanceof ConditionFailed) || attempt >= 8) throw e;
    }
  }
}

/** The flip this token owns; `undefined` when that flip already finished (a re-run). */
function flipOf(item: RotatedItem, token: string): Flip | undefined {
  if (item.flip?.token === token) return item.flip;
  if (item.lastFlipToken === token) return undefined;
  throw new FlipError("FlipLost", item.flip ? "another flip owns this secret now" : "this flip is no longer in progress");
}

export async function targetOf(deps: RotationDeps, item: RotatedItem): Promise<Target> {
  return {
    connection: item.connection,
    managingUser: { username: item.managingUser.username, password: await openManaging(deps, item) },
    agent: item.agent,
  };
}

async function sealPending(deps: RotationDeps, item: RotatedItem, target: 0 | 1, version: number) {
  return deps.envelope.seal(rotationProvider(item.provider).generate(), sealBinding(refOf(item), target, version));
}

/** Step 1: pick the inactive instance and persist its new value (PENDING) before anything touches the target. */
export async function createSecret(deps: RotationDeps, input: StepInput & { force?: boolean; executionId?: string }) {
  const now = deps.now();
  let phase: "created" | "resumed" | "done" = "created";
  const saved = await mutate(deps, input.ref, async (item) => {
    if (item.flip?.token === input.token) return void (phase = "resumed");
    if (item.lastFlipToken === input.token) return void (phase = "done");
    if (item.state === "paused") throw new FlipError("Paused", "rotation is paused");
    if (item.flip) throw new FlipError("FlipInProgress", `a flip is already running (${item.flip.token})`);
    if (!input.force && item.nextFlipAt && new Date(item.nextFlipAt).getTime() > now.getTime() + 60_000) {
      throw new FlipError("NotDue", `the next flip is due at ${item.nextFlipAt}`);
    }
    const target = (1 - item.active) as 0 | 1;
    const pendingVersion = Math.max(item.instances[target].currentVersion, item.instances[target].previousVersion ?? 0) + 1;
    const flip: Flip = {
      token: input.token,
      target,
      pending: await sealPending(deps, item, target, pendingVersion),
      pendingVersion,
      startedAt: now.toISOString(),
      executionId: input.executionId,
    };
    return { ...item, flip, state: item.failureCount > 0 ? item.state : "rotating" };
  });
  return { phase, target: saved.flip?.target ?? saved.active };
}

/** Step 2: make the target hold PENDING. The agent first proves the stored value still works. */
export async function setSecret(deps: RotationDeps, input: StepInput) {
  const item = await loadForFlip(deps, input.ref);
  const flip = flipOf(item, input.token);
  if (!flip) return { phase: "done" as const };
  const provider = rotationProvider(item.provider);
  const ref = refOf(item);
  const username = item.instances[flip.target].username;
  const target = await targetOf(deps, item);
  const pending = await deps.envelope.open(flip.pending, sealBinding(ref, flip.target, flip.pendingVersion));
  try {
    const { outcome, issued } = await provider.apply(deps.agents, { target, username, current: (await openInstance(deps, item, flip.target))!, pending });
    if (issued) await storeIssued(deps, input, flip, issued);
    // Only the outcome: this is a workflow output, and an issued value must never be in one.
    return { phase: "set" as const, result: outcome };
  } catch (e) {
    if (!(e instanceof AgentCallError)) throw e;
    if (e.agentCode === "current_credential_invalid") {
      throw new FlipError("ExternalChange", `the stored password of '${username}' no longer works: it was changed outside Rotor`);
    }
    if (e.agentCode === "database_error") {
      // An error does not prove the value was refused (the change may have committed before
      // the answer got lost): replacing a value the target holds would leave it holding one
      // Rotor no longer has. So first ask the target whether PENDING logs in.
      const applied = await provider.test(deps.agents, target, [{ username, password: pending }]).then(
        (r) => r.valid,
        (probe) => {
          if (probe instanceof AgentCallError) throw new FlipError("Retryable", `could not check what '${username}' holds: ${probe.message}`);
          throw probe;
        },
      );
      if (applied) return { phase: "set" as const, result: "already_applied" as const };
      // The target refused this value (a password policy, say). Never retry the same one:
      // store a fresh PENDING first, then let the workflow retry with it.
      await mutate(deps, input.ref, async (current) => {
        if (current.flip?.token !== input.token || current.flip.pendingVersion !== flip.pendingVersion) return undefined;
        const pendingVersion = flip.pendingVersion + 1;
        return { ...current, flip: { ...flip, pendingVersion, pending: await sealPending(deps, current, flip.target, pendingVersion) } };
      });
      throw new FlipError("ValueRejected", `the target refused the new value for '${username}': ${e.message}`);
    }
    throw new FlipError("Retryable", e.message);
  }
}

/** An issuer's new instance becomes PENDING (sealed like any value) before anything tests or serves it. */
async function storeIssued(deps: RotationDeps, input: StepInput, flip: Flip, issued: Credential) {
  await mutate(deps, input.ref, async (current) => {
    if (current.flip?.token !== input.token || current.flip.pendingVersion !== flip.pendingVersion) throw new FlipError("FlipLost", "the flip changed while its issued value was stored");
    const pending = await deps.envelope.seal(issued.password, sealBinding(refOf(current), flip.target, flip.pendingVersion));
    return { ...current, flip: { ...current.flip, pending, pendingUsername: issued.username } };
  });
}

/** Step 3: the new value logs in. */
export async function testSecret(deps: RotationDeps, input: StepInput) {
  const item = await loadForFlip(deps, input.ref);
  const flip = flipOf(item, input.token);
  if (!flip) return { phase: "done" as const };
  const username = flip.pendingUsername ?? item.instances[flip.target].username;
  const password = await deps.envelope.open(flip.pending, sealBinding(refOf(item), flip.target, flip.pendingVersion));
  let result;
  try {
    result = await rotationProvider(item.provider).test(deps.agents, await targetOf(deps, item), [{ username, password }]);
  } catch (e) {
    if (e instanceof AgentCallError) throw new FlipError("Retryable", e.message);
    throw e;
  }
  if (!result.valid) throw new FlipError("Retryable", `the new value of '${username}' does not log in: ${result.reason}`);
  return { phase: "tested" as const };
}

/** Step 4: in one conditional write, PENDING becomes CURRENT and the target instance becomes active. */
export async function finishSecret(deps: RotationDeps, input: StepInput) {
  const now = deps.now();
  let finished = false;
  const saved = await mutate(deps, input.ref, (item) => {
    const flip = flipOf(item, input.token);
    if (!flip) return undefined;
    finished = true;
    const old = item.instances[flip.target];
    const instances = [...item.instances] as RotatedItem["instances"];
    instances[flip.target] = {
      username: flip.pendingUsername ?? old.username,
      current: flip.pending,
      currentVersion: flip.pendingVersion,
      previous: old.current,
      previousVersion: old.currentVersion,
    };
    return {
      ...item,
      instances,
      active: flip.target,
      flip: undefined,
      lastFlipToken: flip.token,
      lastFlipAt: now.toISOString(),
      nextFlipAt: nextFlipAfter(item.schedule, now).toISOString(),
      flipCount: item.flipCount + 1,
      failureCount: 0,
      lastError: undefined,
      state: "healthy",
    };
  });
  const ref = refOf(saved);
  if (saved.nextFlipAt) await deps.scheduler.scheduleNext(ref, new Date(saved.nextFlipAt));
  if (finished || saved.lastFlipToken === input.token) {
    await recordActivity(deps, {
      type: "rotation.succeeded",
      actor: "rotor:rotation",
      project: ref.project,
      config: ref.config,
      changeId: `flip-${input.token}`,
      at: saved.lastFlipAt,
      detail: { name: ref.name, activeUsername: saved.instances[saved.active].username, flipCount: saved.flipCount, nextFlipAt: saved.nextFlipAt },
    });
  }
  return { phase: "finished" as const, nextFlipAt: saved.nextFlipAt };
}

export interface StepError {
  Error: string;
  Cause?: string;
}

const clip = (s: string | undefined, n = 300) => (s ?? "").slice(0, n);

/** Failure path: count it, decide whether to email, and how long to back off (capped exponential). */
export async function recordFailure(deps: RotationDeps, input: StepInput & { error: StepError }) {
  const now = deps.now().toISOString();
  let saved: RotatedItem;
  try {
    saved = await mutate(deps, input.ref, (item) => {
      const failureCount = item.failureCount + 1;
      return {
        ...item,
        failureCount,
        state: failureCount >= deps.settings.failureThreshold ? "failed" : "retrying",
        lastError: { code: input.error.Error, message: clip(input.error.Cause), at: now },
      };
    });
  } catch (e) {
    // Deleted while failing: no count, no email, no wait; CreateSecret then ends the flip as Skipped.
    if (e instanceof FlipError && e.name === "FlipLost") return { failureCount: 0, notify: false, waitSeconds: 0 };
    throw e;
  }
  const n = saved.failureCount;
  const threshold = deps.settings.failureThreshold;
  await recordActivity(deps, {
    type: "rotation.failed",
    actor: "rotor:rotation",
    project: saved.project,
    config: saved.config,
    changeId: `fail-${input.token}-${n}`,
    detail: { name: saved.name, failureCount: n, error: input.error.Error, message: clip(input.error.Cause) },
  });
  const waitSeconds = Math.min(deps.settings.backoffBaseSec * 2 ** (n - 1), deps.settings.backoffCapSec);
  // Email at the threshold, then again each time the count doubles: loud enough, never a flood.
  const notify = n >= threshold && Number.isInteger(Math.log2(n / threshold));
  return { failureCount: n, notify, waitSeconds };
}

export async function notifyFailure(deps: RotationDeps, input: StepInput & { failure: { failureCount: number } }) {
  const item = await loadRotated(deps, input.ref);
  const sent = await notifyProject(deps, item.project, {
    subject: `Rotor: rotation of ${item.project}/${item.config}/${item.name} failed ${input.failure.failureCount} times`,
    text: [
      `Rotating ${item.name} in ${item.project}/${item.config} has failed ${input.failure.failureCount} times in a row.`,
      `Last error: ${item.lastError?.code ?? "unknown"}: ${item.lastError?.message ?? ""}`,
      `The active credential (${item.instances[item.active].username}) is unchanged and still served; Rotor keeps retrying.`,
    ].join("\n"),
  });
  return { sent };
}

/** The target was changed outside Rotor: change nothing, stop flipping, tell people. */
export async function pauseRotation(deps: RotationDeps, input: StepInput & { error: StepError }) {
  const reason = clip(input.error.Cause) || "the target's state was changed outside Rotor";
  let paused = false;
  const saved = await mutate(deps, input.ref, (item) => {
    if (item.flip && item.flip.token !== input.token) return undefined;
    paused = true;
    return { ...item, flip: undefined, state: "paused", pausedReason: reason };
  });
  if (!paused && saved.state !== "paused") return { paused: false };
  await deps.scheduler.remove(refOf(saved));
  await recordActivity(deps, {
    type: "rotation.paused",
    actor: "rotor:rotation",
    project: saved.project,
    config: saved.config,
    changeId: `pause-${input.token}`,
    detail: { name: saved.name, reason },
  });
  await notifyProject(deps, saved.project, {
    subject: `Rotor: rotation of ${saved.project}/${saved.config}/${saved.name} is paused`,
    text: `Rotation of ${saved.name} was paused and nothing was changed: ${reason}\nResume with: rotor rotated resume ${saved.name} --project ${saved.project} --config ${saved.config}`,
  });
  return { paused: true };
}
