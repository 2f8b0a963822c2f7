/**
 * Activity events. Core publishes them; the bus adapter delivers them (EventBridge in
 * cloud, an in-process bus in embedded mode). A detail never carries a secret value.
 */
export type EventType =
  | "secrets.changed"
  | "project.created"
  | "config.created"
  | "token.created"
  | "token.revoked"
  | "dynamic.created"
  | "dynamic.deleted"
  | "rotation.created"
  | "rotation.succeeded"
  | "rotation.failed"
  | "rotation.paused"
  | "rotation.resumed"
  | "rotation.deleted"
  | "lease.created"
  | "lease.renewed"
  | "lease.revoked"
  | "lease.stuck"
  | "webhook.created"
  | "webhook.deleted";

/**
 * Every event type at run time (webhook filters are checked against it). Adding a type to the
 * union without adding it here fails to compile (see the check below).
 */
export const EVENT_TYPES = [
  "secrets.changed",
  "project.created",
  "config.created",
  "token.created",
  "token.revoked",
  "dynamic.created",
  "dynamic.deleted",
  "rotation.created",
  "rotation.succeeded",
  "rotation.failed",
  "rotation.paused",
  "rotation.resumed",
  "rotation.deleted",
  "lease.created",
  "lease.renewed",
  "lease.revoked",
  "lease.stuck",
  "webhook.created",
  "webhook.deleted",
] as const satisfies readonly EventType[];
type MissingFromList = Exclude<EventType, (typeof EVENT_TYPES)[number]>;
const everyTypeListed: [MissingFromList] extends [never] ? true : MissingFromList = true;
void everyTypeListed;

export interface RotorEvent {
  id: string;
  type: EventType;
  at: string;
  actor: string;
  project?: string;
  config?: string;
  detail: Record<string, unknown>;
}

export interface EventBus {
  publish(event: RotorEvent): Promise<void>;
}

/** Embedded bus: delivers to in-process subscribers; a failing subscriber never blocks the publisher. */
export class LocalEventBus implements EventBus {
  private readonly subscribers: Array<(e: RotorEvent) => Promise<void> | void> = [];
  subscribe(fn: (e: RotorEvent) => Promise<void> | void) {
    this.subscribers.push(fn);
  }
  async publish(event: RotorEvent) {
    await Promise.all(
      this.subscribers.map(async (fn) => {
        try {
          await fn(event);
        } catch (e) {
          console.error(`event subscriber failed for ${event.type}: ${(e as Error).message}`);
        }
      }),
    );
  }
}
