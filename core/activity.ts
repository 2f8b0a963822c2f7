import type { Deps } from "./context.ts";
import type { EventType, RotorEvent } from "./events.ts";
import { newId } from "./ids.ts";
import type { Item } from "./store/table.ts";

export const ACTIVITY_PK = "ACTIVITY";

/**
 * Records one activity entry and publishes it as an event. Derived from a change that
 * already happened, so it is written after it and keyed by the change's id: recording the
 * same change twice writes one entry.
 */
export async function recordActivity(
  deps: Deps,
  entry: { type: EventType; actor: string; project?: string; config?: string; detail?: Record<string, unknown>; changeId?: string },
): Promise<RotorEvent> {
  const at = deps.now().toISOString();
  const event: RotorEvent = {
    id: entry.changeId ?? newId("evt"),
    type: entry.type,
    at,
    actor: entry.actor,
    project: entry.project,
    config: entry.config,
    detail: entry.detail ?? {},
  };
  // The marker (keyed by the change id) fixes the entry's sort key, so a retry rewrites the
  // same entry instead of losing it or writing a second one.
  const marker = { pk: `ACTIVITYID#${event.id}`, sk: "ID" };
  let entrySk = `${at}#${event.id}`;
  if (!(await deps.table.putIfAbsent({ ...marker, entrySk }))) {
    const existing = await deps.table.get(marker.pk, marker.sk);
    entrySk = String(existing?.entrySk ?? entrySk);
    event.at = entrySk.slice(0, entrySk.indexOf("#"));
  }
  const item: Item = { pk: ACTIVITY_PK, sk: entrySk, ...event, kind: "activity" };
  if (await deps.table.putIfAbsent(item)) await deps.events.publish(event);
  return event;
}

export async function listActivity(deps: Deps, opts: { project?: string; limit: number; before?: string }) {
  const items = await deps.table.queryPrefix(ACTIVITY_PK, "", { newestFirst: true });
  return items
    .filter((i) => (!opts.project || i.project === opts.project) && (!opts.before || i.sk < opts.before))
    .slice(0, opts.limit)
    .map(({ pk, sk, kind, ...e }) => ({ ...(e as unknown as RotorEvent), cursor: sk }));
}
