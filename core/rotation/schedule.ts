import { Cron } from "croner";
import { invalid } from "../errors.ts";

/**
 * When flips happen. Either every `intervalDays / 2` (each instance then lives a full
 * interval), or an AWS Scheduler expression: `rate(12 hours)` or `cron(0 8 ? * MON-FRI *)`.
 * Core computes the next time itself, so "rotate now" restarts the interval in both modes.
 */
export type Schedule = { intervalDays: number } | { expression: string };

const RATE = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/;
const CRON = /^cron\((.+)\)$/;

export function validateSchedule(s: Schedule): void {
  if ("intervalDays" in s) {
    if (!(s.intervalDays > 0 && s.intervalDays <= 3650)) throw invalid("intervalDays must be between 0 and 3650 days");
    return;
  }
  const rate = RATE.exec(s.expression);
  if (rate) {
    if (Number(rate[1]) <= 0) throw invalid("a rate must be positive");
    const singular = rate[2].endsWith("s") ? Number(rate[1]) === 1 : Number(rate[1]) !== 1;
    if (singular) throw invalid(`use 'rate(1 ${rate[2].replace(/s$/, "")})' for one unit and plural units otherwise (AWS Scheduler syntax)`);
    return;
  }
  if (CRON.test(s.expression)) {
    cronOf(s.expression); // throws when malformed
    return;
  }
  throw invalid(`schedule '${s.expression}' is not rate(N unit) or cron(min hour day-of-month month day-of-week year)`);
}

/** AWS cron has six fields (with year) and numbers Sunday as 1; croner wants five, Sunday 0. */
function cronOf(expression: string): Cron {
  const fields = CRON.exec(expression)![1].trim().split(/\s+/);
  if (fields.length !== 6) throw invalid("cron() takes six fields: minutes hours day-of-month month day-of-week year");
  const [min, hour, dom, month, dow] = fields;
  if (dom !== "?" && dow !== "?") throw invalid("cron(): one of day-of-month and day-of-week must be '?'");
  const shiftedDow = dow.replace(/\d/g, (d) => String((Number(d) + 6) % 7));
  try {
    return new Cron([min, hour, dom === "?" ? "*" : dom, month, dow === "?" ? "*" : shiftedDow].join(" "), { timezone: "UTC", legacyMode: false });
  } catch (e) {
    throw invalid(`cron expression not understood: ${(e as Error).message}`);
  }
}

export function nextFlipAfter(s: Schedule, from: Date): Date {
  if ("intervalDays" in s) return new Date(from.getTime() + (s.intervalDays * 86_400_000) / 2);
  const rate = RATE.exec(s.expression);
  if (rate) {
    const unitMs = rate[2].startsWith("minute") ? 60_000 : rate[2].startsWith("hour") ? 3_600_000 : 86_400_000;
    return new Date(from.getTime() + Number(rate[1]) * unitMs);
  }
  const next = cronOf(s.expression).nextRun(from);
  if (!next) throw invalid(`schedule '${s.expression}' never fires again`);
  return next;
}
