import { z } from "zod";
import { recordActivity } from "../activity.ts";
import { AgentCallError, AgentSpecSchema } from "../agents/client.ts";
import { conflict, RotorError } from "../errors.ts";
import { secretNameSchema, slugSchema } from "../names.ts";
import { requireConfig } from "../projects.ts";
import { rotationProvider, rotationProviders } from "../providers/index.ts";
import type { Credential, Target } from "../providers/types.ts";
import { configPk } from "../secrets/static.ts";
import type { Contributor } from "../secrets/read.ts";
import { ConditionFailed } from "../store/table.ts";
import {
  flipExecutionName,
  loadRotated,
  openInstance,
  refOf,
  rotatedKey,
  saveRotated,
  sealBinding,
  type Instance,
  type RotatedItem,
  type RotationDeps,
  type SecretRef,
} from "./model.ts";
import { nextFlipAfter, validateSchedule, type Schedule } from "./schedule.ts";

const credential = z.object({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024) });

export const CreateRotatedSchema = z
  .object({
    project: slugSchema,
    config: slugSchema,
    name: secretNameSchema.refine((n) => n.length <= 200, "rotated secret names are at most 200 characters"),
    provider: z.enum(Object.keys(rotationProviders) as [string, ...string[]]),
    connection: z.object({
      host: z.string().min(1).max(255),
      port: z.number().int().min(1).max(65535).optional(),
      database: z.string().min(1).max(128),
      ssl: z.boolean().optional(),
    }),
    managingUser: credential,
    users: z.tuple([credential, credential]),
    intervalDays: z.number().positive().max(3650).optional(),
    schedule: z.string().max(200).optional(),
    agent: AgentSpecSchema.default({ transport: "local" }),
  })
  .superRefine((v, ctx) => {
    if (v.intervalDays !== undefined && v.schedule !== undefined) ctx.addIssue({ code: "custom", path: ["schedule"], message: "give intervalDays or schedule, not both" });
    const [a, b] = v.users.map((u) => u.username);
    if (a === b) ctx.addIssue({ code: "custom", path: ["users"], message: "the two users must be different accounts" });
    if (a === v.managingUser.username || b === v.managingUser.username) {
      ctx.addIssue({ code: "custom", path: ["users"], message: "Rotor never rotates the managing user: use two other accounts" });
    }
  });
export type CreateRotatedInput = z.input<typeof CreateRotatedSchema>;

/** A rotated secret as people see it: never a value. */
export function viewOf(item: RotatedItem) {
  return {
    project: item.project,
    config: item.config,
    name: item.name,
    provider: item.provider,
    strategy: item.strategy,
    state: item.state,
    activeUsername: item.instances[item.active].username,
    inactiveUsername: item.instances[1 - item.active].username,
    schedule: "intervalDays" in item.schedule ? `every ${item.schedule.intervalDays} days (flip every ${item.schedule.intervalDays / 2})` : item.schedule.expression,
    connection: { host: item.connection.host, port: item.connection.port, database: item.connection.database },
    agent: item.agent.transport,
    lastFlipAt: item.lastFlipAt ?? null,
    nextFlipAt: item.state === "paused" ? null : (item.nextFlipAt ?? null),
    failureCount: item.failureCount,
    flipCount: item.flipCount,
    lastError: item.lastError ?? null,
    pausedReason: item.pausedReason ?? null,
    flipInProgress: item.flip ? { token: item.flip.token, startedAt: item.flip.startedAt } : null,
    createdAt: item.createdAt,
  };
}
export type RotatedView = ReturnType<typeof viewOf>;

/** Every credential must log in before Rotor takes it over: a typo now is a failed flip later. */
async function checkLogins(deps: RotationDeps, provider: string, target: Target, creds: Credential[]) {
  const p = rotationProvider(provider);
  for (const cred of creds) {
    let result;
    try {
      result = await p.test(deps.agents, target, [cred]);
    } catch (e) {
      if (e instanceof AgentCallError) throw new RotorError("agent_failed", `could not check '${cred.username}' through the agent: ${e.message}`, 422);
      throw e;
    }
    if (!result.valid) throw new RotorError("credentials_invalid", `'${cred.username}' cannot log in with the password given: ${result.reason}`, 422);
  }
}

export async function createRotated(deps: RotationDeps, actor: string, raw: CreateRotatedInput) {
  const input = CreateRotatedSchema.parse(raw);
  const ref: SecretRef = { project: input.project, config: input.config, name: input.name };
  await requireConfig(deps, ref.project, ref.config);
  const schedule: Schedule = input.schedule ? { expression: input.schedule } : { intervalDays: input.intervalDays ?? 30 };
  validateSchedule(schedule);
  const provider = rotationProvider(input.provider);
  const connection = { ...input.connection, port: input.connection.port ?? provider.defaultPort };
  await refuseNameClash(deps, ref);
  const target: Target = { connection, managingUser: input.managingUser, agent: input.agent };
  await checkLogins(deps, input.provider, target, [input.managingUser, ...input.users]);

  const now = deps.now();
  const instances = (await Promise.all(
    input.users.map(async (u, slot): Promise<Instance> => ({
      username: u.username,
      current: await deps.envelope.seal(u.password, sealBinding(ref, slot as 0 | 1, 1)),
      currentVersion: 1,
    })),
  )) as [Instance, Instance];
  const item: RotatedItem = {
    ...rotatedKey(ref),
    kind: "rotated",
    ...ref,
    provider: provider.type,
    strategy: provider.strategy,
    connection,
    managingUser: { username: input.managingUser.username, password: await deps.envelope.seal(input.managingUser.password, sealBinding(ref, "managing", 1)), version: 1 },
    instances,
    active: 0,
    schedule,
    agent: input.agent,
    state: "healthy",
    failureCount: 0,
    flipCount: 0,
    nextFlipAt: nextFlipAfter(schedule, now).toISOString(),
    createdAt: now.toISOString(),
    rev: 0,
  };
  let saved: RotatedItem;
  try {
    saved = await saveRotated(deps, undefined, item);
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`rotated secret '${ref.name}' already exists in ${ref.project}/${ref.config}`);
    throw e;
  }
  await deps.scheduler.scheduleNext(ref, new Date(saved.nextFlipAt!));
  await recordActivity(deps, { type: "rotation.created", actor, project: ref.project, config: ref.config, changeId: `create-${ref.project}-${ref.config}-${ref.name}-${saved.createdAt}`, detail: { name: ref.name, provider: saved.provider } });
  return viewOf(saved);
}

const SUFFIXES = ["USERNAME", "PASSWORD", "HOST", "PORT", "DATABASE"];

/** A rotated secret's keys must not shadow static secrets, nor another rotated secret's keys. */
async function refuseNameClash(deps: RotationDeps, ref: SecretRef) {
  const items = await deps.table.queryPrefix(configPk(ref.project, ref.config), "SECRET#");
  const taken = new Set(items.filter((i) => !i.deleted).map((i) => i.name as string));
  const clash = SUFFIXES.map((s) => `${ref.name}_${s}`).find((k) => taken.has(k));
  if (clash) throw conflict(`a static secret named ${clash} already exists; rotated secret ${ref.name} would shadow it`);
}

export async function listRotated(deps: RotationDeps, project: string, config: string) {
  await requireConfig(deps, project, config);
  const items = await deps.table.queryPrefix<RotatedItem>(configPk(project, config), "ROTATED#");
  return items.map(viewOf);
}

export async function getRotated(deps: RotationDeps, ref: SecretRef) {
  return viewOf(await loadRotated(deps, ref));
}

export async function deleteRotated(deps: RotationDeps, actor: string, ref: SecretRef) {
  const item = await loadRotated(deps, ref);
  // A failing flip may retry for as long as its target is gone (a decommissioned database):
  // deleting must still stop it. Its next step finds the secret gone and ends as Skipped.
  if (item.flip && item.failureCount === 0) throw conflict(`a flip of ${ref.name} is running (${item.flip.token}); wait for it to end`);
  try {
    await deps.table.delete(item.pk, item.sk, "rev = :rev", { ":rev": item.rev });
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`${ref.name} changed while deleting; try again`);
    throw e;
  }
  await deps.scheduler.remove(ref);
  await recordActivity(deps, { type: "rotation.deleted", actor, project: ref.project, config: ref.config, changeId: `delete-${ref.project}-${ref.config}-${ref.name}-${item.rev}`, detail: { name: ref.name } });
}

/** Rotate now: starts a flip at once; finishing it restarts the interval. */
export async function rotateNow(deps: RotationDeps, ref: SecretRef) {
  const item = await loadRotated(deps, ref);
  if (item.state === "paused") throw conflict(`rotation of ${ref.name} is paused: resume it first`);
  if (item.flip) throw conflict(`a flip of ${ref.name} is already running (execution ${item.flip.executionId ?? item.flip.token})`);
  return deps.workflows.start("rotate", flipExecutionName(item), { ref, force: true });
}

/** Resume after a pause, optionally with the values the target holds now. */
export async function resumeRotated(deps: RotationDeps, actor: string, ref: SecretRef, passwords: [string | undefined, string | undefined]) {
  const before = await loadRotated(deps, ref);
  if (before.flip) throw conflict(`a flip of ${ref.name} is running; wait for it to end`);
  const target: Target = {
    connection: before.connection,
    managingUser: { username: before.managingUser.username, password: await deps.envelope.open(before.managingUser.password, sealBinding(ref, "managing", before.managingUser.version)) },
    agent: before.agent,
  };
  const creds: Credential[] = [];
  for (const slot of [0, 1] as const) creds.push({ username: before.instances[slot].username, password: passwords[slot] ?? (await openInstance(deps, before, slot))! });
  await checkLogins(deps, before.provider, target, [target.managingUser, ...creds]);
  const now = deps.now();
  const instances = (await Promise.all(
    ([0, 1] as const).map(async (slot): Promise<Instance> => {
      const inst = before.instances[slot];
      if (passwords[slot] === undefined) return inst;
      const version = Math.max(inst.currentVersion, inst.previousVersion ?? 0) + 1;
      return { username: inst.username, current: await deps.envelope.seal(passwords[slot]!, sealBinding(ref, slot, version)), currentVersion: version };
    }),
  )) as [Instance, Instance];
  let saved: RotatedItem;
  try {
    saved = await saveRotated(deps, before, {
      ...before,
      instances,
      state: "healthy",
      failureCount: 0,
      lastError: undefined,
      pausedReason: undefined,
      nextFlipAt: nextFlipAfter(before.schedule, now).toISOString(),
    });
  } catch (e) {
    if (e instanceof ConditionFailed) throw conflict(`${ref.name} changed while resuming; try again`);
    throw e;
  }
  await deps.scheduler.scheduleNext(ref, new Date(saved.nextFlipAt!));
  await recordActivity(deps, { type: "rotation.resumed", actor, project: ref.project, config: ref.config, changeId: `resume-${ref.name}-${saved.rev}`, detail: { name: ref.name, newValues: passwords.filter((p) => p !== undefined).length } });
  return viewOf(saved);
}

/** Readers see the active instance of every rotated secret as NAME_USERNAME, NAME_PASSWORD, … */
export const rotatedContributor: Contributor = async (deps, project, config) => {
  const items = await deps.table.queryPrefix<RotatedItem>(configPk(project, config), "ROTATED#");
  const out: Awaited<ReturnType<Contributor>> = {};
  for (const item of items) {
    const inst = item.instances[item.active];
    const password = await openInstance(deps, item, item.active);
    const entry = (value: string) => ({ value, source: "rotated" as const, version: inst.currentVersion });
    out[`${item.name}_USERNAME`] = entry(inst.username);
    out[`${item.name}_PASSWORD`] = entry(password!);
    out[`${item.name}_HOST`] = entry(item.connection.host);
    out[`${item.name}_PORT`] = entry(String(item.connection.port));
    out[`${item.name}_DATABASE`] = entry(item.connection.database);
  }
  return out;
};

export { refOf };
