import type { Command } from "commander";
import type { ActivityEntry } from "../../core/activity.ts";
import { CliError } from "../client.ts";
import { clientFor, print, type GlobalFlags } from "../context.ts";

type Entry = ActivityEntry;
interface Page {
  activity: Entry[];
  next?: string;
}

/** Entries can land slightly out of order (each is timed when its change ends): --follow re-reads this far back. */
const LATE_WINDOW_MS = 60_000;
const MAX_PAGES_PER_POLL = 20;

function positiveInt(text: string, what: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new CliError(`${what} must be a whole number from 1 to ${max}, not '${text}'`, 2);
  return n;
}

function line(e: Entry, json: boolean): string {
  if (json) return JSON.stringify(e);
  const scope = e.project ? (e.config ? `${e.project}/${e.config}` : e.project) : "-";
  const detail = Object.entries(e.detail ?? {})
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return [e.at, e.type.padEnd(18), e.actor, scope, detail].join("  ").trimEnd();
}

export function registerActivity(program: Command) {
  program
    .command("activity")
    .description("who changed what and when (never a value), oldest of the shown entries first")
    .option("--limit <n>", "how many of the latest entries to show", "20")
    .option("--follow", "keep printing new entries as they happen, until Ctrl-C")
    .option("--interval <seconds>", "how often --follow asks for new entries", "2")
    .option("--json", "one JSON object per line")
    .action(async (opts: { limit: string; follow?: boolean; interval: string; json?: boolean }, cmd: Command) => {
      const limit = positiveInt(opts.limit, "--limit", 500);
      const intervalMs = positiveInt(opts.interval, "--interval", 3600) * 1000;
      const project = (cmd.optsWithGlobals() as GlobalFlags).project ?? process.env.ROTOR_PROJECT;
      const client = clientFor(cmd);
      const get = (query: Record<string, string | number | undefined>) => client.request<Page>("GET", "/v3/activity", { query: { project, ...query } });

      const first = await get({ limit });
      for (const e of [...first.activity].reverse()) print(line(e, !!opts.json));
      if (!opts.follow) return;

      // Everything at or below `floor` was shown or deliberately skipped; `seen` holds what
      // was shown above it, so a late entry inside the window is printed exactly once.
      let floor = first.activity.at(-1)?.cursor ?? "";
      const seen = new Set(first.activity.map((e) => e.cursor));
      let newestAt = first.activity[0]?.at;

      let stopped = false;
      let wake: () => void = () => {};
      const onSigint = () => {
        if (stopped) process.exit(130);
        stopped = true;
        wake();
      };
      process.on("SIGINT", onSigint);
      let unreachable = false;
      try {
        while (!stopped) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, intervalMs);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
          if (stopped) break;
          const windowFloor = newestAt ? [floor, new Date(Date.parse(newestAt) - LATE_WINDOW_MS).toISOString()].sort().at(-1)! : floor;
          const fresh: Entry[] = [];
          try {
            let before: string | undefined;
            for (let page = 0; page < MAX_PAGES_PER_POLL; page++) {
              const res = await get({ limit: 100, cursor: before });
              let reachedFloor = false;
              for (const e of res.activity) {
                if (e.cursor <= windowFloor) {
                  reachedFloor = true;
                  break;
                }
                if (!seen.has(e.cursor)) fresh.push(e);
              }
              if (reachedFloor || !res.next) break;
              before = res.next;
            }
            unreachable = false;
          } catch (e) {
            if (!(e instanceof CliError) || e.exitCode !== 3) throw e;
            if (!unreachable) process.stderr.write(`rotor: ${e.message}; still trying\n`);
            unreachable = true;
            continue;
          }
          if (stopped) break;
          fresh.sort((a, b) => (a.cursor < b.cursor ? -1 : 1));
          for (const e of fresh) {
            print(line(e, !!opts.json));
            seen.add(e.cursor);
            if (!newestAt || e.at > newestAt) newestAt = e.at;
          }
          floor = windowFloor;
          for (const c of seen) if (c <= floor) seen.delete(c);
        }
      } finally {
        process.off("SIGINT", onSigint);
      }
    });
}
