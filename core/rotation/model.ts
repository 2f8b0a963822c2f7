import { createHash } from "node:crypto";
import type { AgentClient, AgentSpec } from "../agents/client.ts";
import type { Deps } from "../context.ts";
import { bindingFor, type SealedValue } from "../crypto/envelope.ts";
import { notFound } from "../errors.ts";
import type { Item } from "../store/table.ts";
import { configPk } from "../secrets/static.ts";
import type { Schedule } from "./schedule.ts";

export interface SecretRef {
  project: string;
  config: string;
  name: string;
}

export type RotationState = "healthy" | "rotating" | "retrying" | "failed" | "paused";

export interface Instance {
  username: string;
  current: SealedValue;
  currentVersion: number;
  /** The value this instance had before its last flip: what the target may still hold after a crash. */
  previous?: SealedValue;
  previousVersion?: number;
}

export interface Flip {
  token: string;
  target: 0 | 1;
  pending: SealedValue;
  pendingVersion: number;
  /** Issuers: the new instance's name (e.g. its access key id), known once the target issued it. */
  pendingUsername?: string;
  startedAt: string;
  executionId?: string;
}

/**
 * One item per rotated secret: both instances, which is active, and the in-flight flip.
 * Every change is one put conditioned on `rev`, so a flip commits atomically.
 */
export interface RotatedItem extends Item {
  kind: "rotated";
  project: string;
  config: string;
  name: string;
  provider: string;
  strategy: "updater" | "issuer";
  connection: { host: string; port: number; database: string; ssl?: boolean };
  managingUser: { username: string; password: SealedValue; version: number };
  instances: [Instance, Instance];
  active: 0 | 1;
  schedule: Schedule;
  agent: AgentSpec;
  state: RotationState;
  flip?: Flip;
  lastFlipToken?: string;
  failureCount: number;
  lastError?: { code: string; message: string; at: string };
  pausedReason?: string;
  lastFlipAt?: string;
  nextFlipAt?: string;
  flipCount: number;
  createdAt: string;
  rev: number;
}

/** What flips need beyond the store: agents, workflows, the scheduler, email, and tunables. */
export interface RotationDeps extends Deps {
  agents: AgentClient;
  workflows: WorkflowStarter;
  scheduler: RotationScheduler;
  notifier: Notifier;
  settings: RotationSettings;
}

export interface RotationSettings {
  /** Consecutive failures before an email goes out. */
  failureThreshold: number;
  backoffBaseSec: number;
  backoffCapSec: number;
  /** Project notification address used when a project has none (e.g. the operator). */
  defaultNotifyEmail?: string;
}

export const defaultRotationSettings: RotationSettings = { failureThreshold: 3, backoffBaseSec: 30, backoffCapSec: 3600 };

export interface WorkflowStarter {
  /** Starts (or, when one of that name already runs, joins) an execution. */
  start(machine: "rotate" | "lease", name: string, input: Record<string, unknown>): Promise<{ executionId: string }>;
}

/** Cloud: one EventBridge Scheduler schedule per secret; embedded: the poller reads the due index. */
export interface RotationScheduler {
  scheduleNext(ref: SecretRef, at: Date): Promise<void>;
  remove(ref: SecretRef): Promise<void>;
}

export interface Notifier {
  send(message: { to: string; subject: string; text: string }): Promise<void>;
}

export const ROTATION_DUE = "DUE#ROTATION";
export const rotatedKey = (ref: SecretRef) => ({ pk: configPk(ref.project, ref.config), sk: `ROTATED#${ref.name}` });
export const dueSortKey = (at: string, ref: SecretRef) => `${at}#${ref.project}#${ref.config}#${ref.name}`;

export type Slot = 0 | 1 | "managing";
export const sealBinding = (ref: SecretRef, slot: Slot, version: number) =>
  bindingFor({ purpose: "rotated", project: ref.project, config: ref.config, name: ref.name, slot: String(slot), version });

export const refOf = (item: RotatedItem): SecretRef => ({ project: item.project, config: item.config, name: item.name });

/**
 * The name of the execution that flips this item next. Whoever starts a flip from the same
 * read of the item (parallel "rotate now" requests, a poller tick) names the same execution,
 * and the workflow engine runs a name once: the callers share one execution id instead of
 * racing several executions into one flip and skips. The revision changes with every write,
 * so the next flip gets a new name; createdAt tells a re-created secret from the deleted one.
 */
export function flipExecutionName(item: RotatedItem): string {
  const secret = createHash("sha256").update(JSON.stringify([item.project, item.config, item.name, item.createdAt])).digest("hex").slice(0, 20);
  return `rot-${secret}-${item.rev}`;
}

export async function loadRotated(deps: Deps, ref: SecretRef): Promise<RotatedItem> {
  const key = rotatedKey(ref);
  const item = await deps.table.get<RotatedItem>(key.pk, key.sk);
  if (!item) throw notFound(`rotated secret '${ref.name}' does not exist in ${ref.project}/${ref.config}`);
  return item;
}

/** The one write: the whole item, only if nobody changed it since `before` was read. */
export async function saveRotated(deps: Deps, before: RotatedItem | undefined, after: RotatedItem): Promise<RotatedItem> {
  const next = { ...after, rev: (before?.rev ?? 0) + 1 };
  if (next.state === "paused" || !next.nextFlipAt) {
    delete next.gsi1pk;
    delete next.gsi1sk;
  } else {
    // An in-flight flip is due at once: if the process running it dies, the poller re-runs it.
    next.gsi1pk = ROTATION_DUE;
    next.gsi1sk = dueSortKey(next.flip ? next.flip.startedAt : next.nextFlipAt, refOf(next));
  }
  await deps.table.put(next, before ? { expression: "rev = :rev", values: { ":rev": before.rev } } : { expression: "attribute_not_exists(pk)" });
  return next;
}

export async function openInstance(deps: Deps, item: RotatedItem, slot: 0 | 1, which: "current" | "previous" = "current") {
  const inst = item.instances[slot];
  const sealed = which === "current" ? inst.current : inst.previous;
  const version = which === "current" ? inst.currentVersion : inst.previousVersion;
  if (!sealed || version === undefined) return undefined;
  return deps.envelope.open(sealed, sealBinding(refOf(item), slot, version));
}

export async function openManaging(deps: Deps, item: RotatedItem) {
  return deps.envelope.open(item.managingUser.password, sealBinding(refOf(item), "managing", item.managingUser.version));
}
