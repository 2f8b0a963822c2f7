import { z } from "zod";
import type { Deps } from "../../core/context.ts";
import type { RotorEvent } from "../../core/events.ts";
import { deliverWithRetries, policyFromEnv, type DeliveryPolicy } from "../../core/webhooks/deliver.ts";
import { matchingWebhooks } from "../../core/webhooks/model.ts";

/** What an EventBridge rule on Rotor's bus hands its target: the RotorEvent is the detail. */
const BridgeEvent = z.object({
  source: z.literal("rotor"),
  "detail-type": z.string(),
  detail: z.object({
    id: z.string(),
    type: z.string(),
    at: z.string(),
    actor: z.string(),
    project: z.string().optional(),
    config: z.string().optional(),
    detail: z.record(z.string(), z.unknown()),
  }),
});

/**
 * One event → every matching webhook, each with all its retries, in parallel. A delivery
 * that gives up is logged, not thrown: a thrown error would make EventBridge re-run the
 * whole event and deliver again to the receivers that already took it.
 */
export async function deliverEvent(deps: Deps, raw: unknown, policy: DeliveryPolicy) {
  const event = BridgeEvent.parse(raw).detail as RotorEvent;
  const targets = await matchingWebhooks(deps, event);
  const results = await Promise.all(targets.map((t) => deliverWithRetries(deps, t, event, policy)));
  return { eventId: event.id, deliveries: results.map((r) => ({ webhookId: r.webhookId, status: r.status, attempts: r.attempt })) };
}

let deps: Promise<Deps> | undefined;

export const handler = async (event: unknown) => {
  deps ??= import("../lib/cloud.ts").then((m) => m.coreCloudDeps());
  return deliverEvent(await deps, event, policyFromEnv(process.env));
};
