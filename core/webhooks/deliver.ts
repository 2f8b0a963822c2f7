import { createHash } from "node:crypto";
import type { Deps } from "../context.ts";
import type { RotorEvent } from "../events.ts";
import { recordAttempt, type DeliveryAttempt, type Webhook } from "./model.ts";
import { signWebhook } from "./signature.ts";

/** How hard Rotor tries: attempt n waits min(base·2^(n-2), cap) after attempt n-1 failed. */
export interface DeliveryPolicy {
  maxAttempts: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** Per attempt: a receiver that has not answered by then counts as failed. */
  timeoutMs: number;
}

// Five attempts over half a minute of waiting: long enough to ride out a restart of the
// receiver (often what the event asked for), short enough that even five 10 s timeouts fit
// one Lambda invocation (80 s worst case; the function's timeout is 120 s).
export const defaultDeliveryPolicy: DeliveryPolicy = { maxAttempts: 5, backoffBaseMs: 2_000, backoffCapMs: 30_000, timeoutMs: 10_000 };

export function policyFromEnv(env: NodeJS.ProcessEnv, base: DeliveryPolicy = defaultDeliveryPolicy): DeliveryPolicy {
  const num = (name: string, fallback: number) => {
    const v = Number(env[name]);
    return env[name] && Number.isFinite(v) && v > 0 ? v : fallback;
  };
  return {
    maxAttempts: num("ROTOR_WEBHOOK_MAX_ATTEMPTS", base.maxAttempts),
    backoffBaseMs: num("ROTOR_WEBHOOK_BACKOFF_MS", base.backoffBaseMs),
    backoffCapMs: num("ROTOR_WEBHOOK_BACKOFF_CAP_MS", base.backoffCapMs),
    timeoutMs: num("ROTOR_WEBHOOK_TIMEOUT_MS", base.timeoutMs),
  };
}

/** The wait before attempt `next` (2, 3, ...). */
export const backoffMs = (policy: DeliveryPolicy, next: number) => Math.min(policy.backoffBaseMs * 2 ** (next - 2), policy.backoffCapMs);

/** Stable per (event, webhook): every attempt and every re-run of the same event carries it, so receivers deduplicate. */
export const deliveryIdOf = (eventId: string, webhookId: string) => `dlv_${createHash("sha256").update(`${eventId}|${webhookId}`).digest("hex").slice(0, 24)}`;

export type DeliveryTarget = Webhook & { secret: string };

function describe(e: unknown, timeoutMs: number): string {
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err?.name === "TimeoutError") return `no answer within ${timeoutMs} ms`;
  if (err?.name === "AbortError") return "stopped before an answer (Rotor shut down)";
  return (err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e)).slice(0, 200);
}

/** One POST of the event to one webhook, logged (never with the secret or the receiver's body). */
export async function attemptDelivery(
  deps: Deps,
  target: DeliveryTarget,
  event: RotorEvent,
  attempt: number,
  policy: DeliveryPolicy,
  stop?: AbortSignal,
): Promise<DeliveryAttempt> {
  const deliveryId = deliveryIdOf(event.id, target.id);
  const body = JSON.stringify(event);
  const now = deps.now();
  const timestamp = Math.floor(now.getTime() / 1000);
  const started = performance.now();
  let httpStatus: number | undefined;
  let error: string | undefined;
  try {
    const timeout = AbortSignal.timeout(policy.timeoutMs);
    const res = await fetch(target.url, {
      method: "POST",
      body,
      // A redirect would re-send the signed body somewhere the user did not register.
      redirect: "manual",
      signal: stop ? AbortSignal.any([timeout, stop]) : timeout,
      headers: {
        "content-type": "application/json",
        "user-agent": "Rotor-Webhooks/1",
        "x-rotor-event": event.type,
        "x-rotor-delivery": deliveryId,
        "x-rotor-timestamp": String(timestamp),
        "x-rotor-signature": signWebhook(target.secret, timestamp, body),
      },
    });
    httpStatus = res.status;
    await res.body?.cancel().catch(() => {});
    if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
  } catch (e) {
    error = describe(e, policy.timeoutMs);
  }
  const durationMs = Math.round(performance.now() - started);
  const last = attempt >= policy.maxAttempts || stop?.aborted === true;
  const record: DeliveryAttempt = {
    webhookId: target.id,
    deliveryId,
    eventId: event.id,
    eventType: event.type,
    attempt,
    status: error === undefined ? "delivered" : last ? "gave_up" : "failed",
    httpStatus,
    durationMs,
    error,
    at: now.toISOString(),
    nextAttemptAt: error !== undefined && !last ? new Date(now.getTime() + durationMs + backoffMs(policy, attempt + 1)).toISOString() : undefined,
  };
  await recordAttempt(deps, record);
  return record;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** All attempts in a row (cloud: one Lambda invocation per event); returns the last attempt. */
export async function deliverWithRetries(deps: Deps, target: DeliveryTarget, event: RotorEvent, policy: DeliveryPolicy): Promise<DeliveryAttempt> {
  for (let attempt = 1; ; attempt++) {
    const result = await attemptDelivery(deps, target, event, attempt, policy);
    if (result.status !== "failed") return result;
    await sleep(backoffMs(policy, attempt + 1));
  }
}
