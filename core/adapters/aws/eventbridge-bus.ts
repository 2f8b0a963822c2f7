import { PutEventsCommand, type EventBridgeClient } from "@aws-sdk/client-eventbridge";
import type { EventBus, RotorEvent } from "../../events.ts";

/** Cloud activity events: PutEvents on Rotor's bus, `source: "rotor"`, detail-type = event type. */
export class EventBridgeBus implements EventBus {
  constructor(private readonly client: EventBridgeClient, private readonly eventBusName: string) {}

  async publish(event: RotorEvent): Promise<void> {
    const out = await this.client.send(
      new PutEventsCommand({
        Entries: [{ Source: "rotor", DetailType: event.type, Detail: JSON.stringify(event), EventBusName: this.eventBusName }],
      }),
    );
    if ((out.FailedEntryCount ?? 0) > 0) {
      const failed = out.Entries?.find((e) => e.ErrorCode);
      throw new Error(`EventBridge refused event ${event.id} (${event.type}): ${failed?.ErrorCode ?? "unknown"} ${failed?.ErrorMessage ?? ""}`.trim());
    }
  }
}
