import { flipExecutionName, ROTATION_DUE, refOf, type RotatedItem, type RotationDeps, type RotationScheduler } from "../../rotation/model.ts";
import { Periodic } from "./periodic.ts";
import type { LocalStepFunctions } from "./step-functions.ts";

/** Embedded scheduling needs no per-secret schedule: the poller reads the due index. */
export class IndexScheduler implements RotationScheduler {
  async scheduleNext() {}
  async remove() {}
}

/**
 * The embedded scheduler: every tick, starts a flip for each rotated secret whose next
 * flip is due, and re-runs (same execution name, same token) any flip left in flight by
 * a process that died. It names a new flip as "rotate now" does (flipExecutionName), so a
 * tick racing a request joins the request's execution; any other duplicate start is
 * harmless: the flip's conditional write lets one win and the other ends as Skipped.
 */
export class DuePoller extends Periodic {
  constructor(
    private readonly deps: RotationDeps,
    private readonly runner: LocalStepFunctions,
    private readonly opts: { intervalMs: number; maxConcurrent: number } = { intervalMs: 1000, maxConcurrent: 50 },
  ) {
    super("rotation poller", opts.intervalMs);
  }

  /** Starts what is due; returns how many executions it started. */
  protected async pass(): Promise<number> {
    const due = await this.deps.table.queryDue<RotatedItem>(ROTATION_DUE, this.deps.now().toISOString() + "\uffff", 1000);
    let started = 0;
    for (const item of due) {
      if (this.runner.runningCount() >= this.opts.maxConcurrent) break;
      if (item.state === "paused") continue;
      const ref = refOf(item);
      if (item.flip) {
        if (this.runner.isRunning(item.flip.token)) continue;
        await this.runner.start("rotate", item.flip.token, { ref, force: true });
      } else {
        if (this.runner.isRunningFor(ref)) continue;
        await this.runner.start("rotate", flipExecutionName(item), { ref, force: false });
      }
      started++;
    }
    return started;
  }
}
