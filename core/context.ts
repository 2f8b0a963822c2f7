import type { Envelope } from "./crypto/envelope.ts";
import type { Table } from "./store/table.ts";
import type { EventBus } from "./events.ts";
import type { Contributor } from "./secrets/read.ts";

/** What every core operation needs; built once by local/ or functions/ and passed in. */
export interface Deps {
  table: Table;
  envelope: Envelope;
  events: EventBus;
  now: () => Date;
  /** Sources of config values beyond static secrets (rotated, dynamic). */
  contributors?: Contributor[];
}
