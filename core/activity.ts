import type { Deps } from "./context.ts";
import type { EventType, RotorEvent } from "./events.ts";
import { newId } from "./ids.ts";
import type { Item } from "./store/table.ts";

export const ACTIVITY_PK = "ACTIVITY";
/** Per-project copy of each entry, so a project's history pages by key instead of by filter. */
export const projectActivityPk = (project: string) => `ACTIVITY#${project}`;

export type ActivityEntry = RotorEvent & { cursor: string };

/**
 * Records one activity entry and publishes it as an event. Derived from a change that
 * already happened, so it is written after it and keyed by the change's id: recording the
 * same change twice writes one entry. Publishing is at least once: the marker remembers
 * whether the event went out, so a retry after a failed publish (or a crash) publishes it
 * then; receivers deduplicate on the event id.
 *
 * `at`, when the change stored its own time (a flip's lastFlipAt, a lease's createdAt),
 * fixes the entry's key up front, so the marker and the entries go in together: one round
 * trip fewer on a flip's and a lease's path.
 */
export async function recordActivity(
  deps: Deps,
  entry: { type: EventType; actor: string; project?: string; config?: string; detail?: Record<string, unknown>; changeId?: string; at?: string },
): Promise<RotorEvent> {
  const event: RotorEvent = {
    id: entry.changeId ?? newId("evt"),
    type: entry.type,
    at: entry.at ?? deps.now().toISOString(),
    actor: entry.actor,
    project: entry.project,
    config: entry.config,
    detail: entry.detail ?? {},
  };
  const marker = { pk: `ACTIVITYID#${event.id}`, sk: "ID" };
  const putEntries = (entrySk: string) => {
    const item: Item = { pk: ACTIVITY_PK, sk: entrySk, ...event, kind: "activity" };
    return Promise.all([deps.table.putIfAbsent(item), event.project ? deps.table.putIfAbsent({ ...item, pk: projectActivityPk(event.project) }) : undefined]);
  };
  const earlierAttempt = async (entrySk: string) => {
    const existing = await deps.table.get(marker.pk, marker.sk);
    return { entrySk: String(existing?.entrySk ?? entrySk), published: existing?.published === true };
  };

  let entrySk = `${event.at}#${event.id}`;
  let published = false;
  if (entry.at !== undefined) {
    const [fresh] = await Promise.all([deps.table.putIfAbsent({ ...marker, entrySk }), putEntries(entrySk)]);
    if (!fresh) ({ published } = await earlierAttempt(entrySk));
  } else {
    // The marker fixes the entry's sort key, so a retry rewrites the same entry instead of
    // losing it or writing a second one.
    if (!(await deps.table.putIfAbsent({ ...marker, entrySk }))) {
      ({ entrySk, published } = await earlierAttempt(entrySk));
      event.at = entrySk.slice(0, entrySk.indexOf("#"));
    }
    await putEntries(entrySk);
  }
  if (!published) {
    await deps.events.publish(event);
    await deps.table.update(marker.pk, marker.sk, { expression: "SET published = :t", values: { ":t": true } });
  }
  return event;
}

const toEntry = ({ pk: _pk, sk, kind: _kind, ...e }: Item): ActivityEntry => ({ ...(e as unknown as RotorEvent), cursor: sk });

/**
 * One page of activity, newest first, read by key: `sk < before` on the whole log or on one
 * project's copy, stopping after `limit` (+1 to know whether another page exists).
 */
export async function pageActivity(deps: Deps, opts: { project?: string; limit: number; before?: string }): Promise<{ activity: ActivityEntry[]; next?: string }> {
  const pk = opts.project ? projectActivityPk(opts.project) : ACTIVITY_PK;
  const items = await deps.table.queryBefore(pk, { before: opts.before, limit: opts.limit + 1 });
  const activity = items.slice(0, opts.limit).map(toEntry);
  return { activity, next: items.length > opts.limit ? activity[activity.length - 1]?.cursor : undefined };
}

export async function listActivity(deps: Deps, opts: { project?: string; limit: number; before?: string }): Promise<ActivityEntry[]> {
  return (await pageActivity(deps, opts)).activity;
}
