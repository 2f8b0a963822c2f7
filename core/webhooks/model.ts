import { randomBytes } from "node:crypto";
import { recordActivity } from "../activity.ts";
import type { Deps } from "../context.ts";
import { bindingFor, type SealedValue } from "../crypto/envelope.ts";
import { conflict, invalid, notFound } from "../errors.ts";
import { EVENT_TYPES, type RotorEvent } from "../events.ts";
import { newId } from "../ids.ts";
import { getProject, requireConfig } from "../projects.ts";
import type { Item } from "../store/table.ts";

/**
 * Webhooks, per project. The webhook item lives in one partition (WEBHOOKS, sorted by
 * project) so an event's matching webhooks are one key query; a small pointer keyed by id
 * serves removal and the delivery log. The signing secret is sealed with the envelope and
 * shown once, at creation.
 */
export interface Webhook {
  id: string;
  project: string;
  url: string;
  /** Event types or `group.*` patterns; empty means every event of the project. */
  events: string[];
  /** Only events of this config (events without a config never match). */
  config?: string;
  createdAt: string;
  createdBy: string;
}
interface WebhookItem extends Item, Webhook {
  sealedSecret: SealedValue;
}

export interface DeliveryAttempt {
  webhookId: string;
  deliveryId: string;
  eventId: string;
  eventType: string;
  attempt: number;
  /** delivered: a 2xx; failed: will be retried; gave_up: the last allowed attempt failed. */
  status: "delivered" | "failed" | "gave_up";
  httpStatus?: number;
  durationMs: number;
  error?: string;
  at: string;
  nextAttemptAt?: string;
}

export const MAX_WEBHOOKS_PER_PROJECT = 25;
const LIST_PK = "WEBHOOKS";
const listKey = (project: string, id: string) => ({ pk: LIST_PK, sk: `WEBHOOK#${project}#${id}` });
const pointerKey = (id: string) => ({ pk: `WEBHOOK#${id}`, sk: "WEBHOOK" });
const attemptSk = (at: string, deliveryId: string, attempt: number) => `ATTEMPT#${at}#${deliveryId}#${String(attempt).padStart(3, "0")}`;
export const secretBinding = (w: { id: string; project: string }) => bindingFor({ purpose: "webhook", id: w.id, project: w.project });
export const WEBHOOK_ID = /^wh_[A-Za-z0-9]+$/;

/** Only http(s), and no credentials in the URL: the URL is stored and listed in clear. */
export function validateWebhookUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`'${raw.slice(0, 100)}' is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw invalid(`webhook URLs must be http or https, not ${url.protocol.replace(/:$/, "")}`);
  if (url.username || url.password) throw invalid("webhook URLs must not carry credentials: verify the X-Rotor-Signature header instead");
  if (raw.length > 2048) throw invalid("webhook URLs are at most 2048 characters");
  return url.toString();
}

export function validateEventFilter(events: string[]): string[] {
  const groups = new Set(EVENT_TYPES.map((t) => t.slice(0, t.indexOf("."))));
  for (const e of events) {
    const ok = (EVENT_TYPES as readonly string[]).includes(e) || (e.endsWith(".*") && groups.has(e.slice(0, -2)));
    if (!ok) throw invalid(`unknown event type '${e.slice(0, 60)}': one of ${EVENT_TYPES.join(", ")}, or a group like rotation.*`);
  }
  return [...new Set(events)];
}

export function matches(w: Webhook, event: RotorEvent): boolean {
  if (event.project !== w.project) return false;
  if (w.config !== undefined && event.config !== w.config) return false;
  if (w.events.length === 0) return true;
  return w.events.some((p) => p === event.type || (p.endsWith(".*") && event.type.startsWith(p.slice(0, -1))));
}

const view = (i: WebhookItem): Webhook => ({
  id: i.id,
  project: i.project,
  url: i.url,
  events: i.events ?? [],
  config: i.config,
  createdAt: i.createdAt,
  createdBy: i.createdBy,
});

export async function createWebhook(
  deps: Deps,
  actor: string,
  input: { project: string; url: string; events?: string[]; config?: string },
): Promise<{ webhook: Webhook; secret: string }> {
  const url = validateWebhookUrl(input.url);
  const events = validateEventFilter(input.events ?? []);
  if (input.config !== undefined) await requireConfig(deps, input.project, input.config);
  else await getProject(deps, input.project);
  const existing = await deps.table.queryPrefix(LIST_PK, `WEBHOOK#${input.project}#`);
  if (existing.length >= MAX_WEBHOOKS_PER_PROJECT) throw conflict(`project '${input.project}' already has ${MAX_WEBHOOKS_PER_PROJECT} webhooks: remove one first`);
  const id = newId("wh", 9);
  const secret = `whsec_${randomBytes(32).toString("base64url")}`;
  const webhook: Webhook = { id, project: input.project, url, events, config: input.config, createdAt: deps.now().toISOString(), createdBy: actor };
  const sealedSecret = await deps.envelope.seal(secret, secretBinding(webhook));
  // Pointer first: a webhook reachable from the list always has its pointer.
  await deps.table.put({ ...pointerKey(id), kind: "webhook-pointer", id, project: input.project }, { expression: "attribute_not_exists(pk)" });
  await deps.table.put({ ...listKey(input.project, id), kind: "webhook", ...webhook, sealedSecret });
  await recordActivity(deps, { type: "webhook.created", actor, project: webhook.project, config: webhook.config, changeId: `webhook-create-${id}`, detail: describeForActivity(webhook) });
  return { webhook, secret };
}

export async function listWebhooks(deps: Deps, project?: string): Promise<Webhook[]> {
  const items = await deps.table.queryPrefix<WebhookItem>(LIST_PK, project ? `WEBHOOK#${project}#` : "WEBHOOK#");
  return items.map(view);
}

async function loadItem(deps: Deps, id: string): Promise<WebhookItem> {
  const pointer = await deps.table.get(pointerKey(id).pk, pointerKey(id).sk);
  const item = pointer && (await deps.table.get<WebhookItem>(LIST_PK, listKey(String(pointer.project), id).sk));
  if (!item) throw notFound(`webhook '${id}' does not exist`);
  return item;
}

export async function getWebhook(deps: Deps, id: string): Promise<Webhook> {
  return view(await loadItem(deps, id));
}

/** Removes the webhook and its delivery log; deliveries already under way finish. */
export async function removeWebhook(deps: Deps, actor: string, id: string): Promise<void> {
  const item = await loadItem(deps, id);
  await deps.table.delete(LIST_PK, item.sk);
  await deps.table.delete(pointerKey(id).pk, pointerKey(id).sk);
  for (const a of await deps.table.queryPrefix(pointerKey(id).pk, "ATTEMPT#")) await deps.table.delete(a.pk, a.sk);
  await recordActivity(deps, { type: "webhook.deleted", actor, project: item.project, config: item.config, changeId: `webhook-delete-${id}`, detail: describeForActivity(view(item)) });
}

// Only the origin of the URL: paths and queries of webhook URLs often carry a token of their own.
const describeForActivity = (w: Webhook) => ({ id: w.id, origin: new URL(w.url).origin, events: w.events });

/** The webhooks an event goes to, each with its secret opened for signing. */
export async function matchingWebhooks(deps: Deps, event: RotorEvent): Promise<Array<Webhook & { secret: string }>> {
  if (!event.project) return [];
  const items = await deps.table.queryPrefix<WebhookItem>(LIST_PK, `WEBHOOK#${event.project}#`);
  const out: Array<Webhook & { secret: string }> = [];
  for (const item of items) {
    const w = view(item);
    if (matches(w, event)) out.push({ ...w, secret: await deps.envelope.open(item.sealedSecret, secretBinding(w)) });
  }
  return out;
}

export async function recordAttempt(deps: Deps, a: DeliveryAttempt): Promise<void> {
  await deps.table.put({ pk: pointerKey(a.webhookId).pk, sk: attemptSk(a.at, a.deliveryId, a.attempt), kind: "webhook-attempt", ...a });
}

/** The delivery log of one webhook, newest attempt first. */
export async function listDeliveries(deps: Deps, id: string, limit: number): Promise<DeliveryAttempt[]> {
  await loadItem(deps, id);
  const items = await deps.table.queryPrefix(pointerKey(id).pk, "ATTEMPT#", { newestFirst: true, limit });
  return items.map(({ pk: _pk, sk: _sk, kind: _kind, ...a }) => a as unknown as DeliveryAttempt);
}
