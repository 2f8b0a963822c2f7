import { newId } from "../ids.ts";
import { ConditionFailed } from "../store/table.ts";
import { ROTATION_DUE, refOf, saveRotated, type RotatedItem, type RotationDeps } from "./model.ts";

/**
 * Cloud counterpart of the embedded poller's re-run of flips left in flight. A flip whose
 * execution died (a manual stop, the history limit after weeks of failing, a redeploy gone
 * wrong) still holds the secret, and every later firing would skip it. Step Functions never
 * reuses an execution name, and the flip token is the execution name, so the flip is handed
 * to a new token in one conditional write — PENDING, its version and target unchanged — and
 * a new execution of that name picks it up where it stopped (every step converges on re-run).
 * A crash between the write and the start leaves a flip whose execution doesn't exist: the
 * next pass hands it on again.
 */
export async function rescueStalledFlips(
  deps: RotationDeps,
  isAlive: (token: string) => Promise<boolean>,
  opts: { olderThanMs: number; limit?: number },
): Promise<string[]> {
  const until = new Date(deps.now().getTime() - opts.olderThanMs).toISOString();
  // In flight, the due index sorts a secret by its flip's start: only flips older than the grace come back.
  const due = await deps.table.queryDue<RotatedItem>(ROTATION_DUE, until + "\uffff", opts.limit ?? 200);
  const restarted: string[] = [];
  for (const item of due) {
    if (!item.flip || item.flip.startedAt > until || item.state === "paused") continue;
    if (await isAlive(item.flip.token)) continue;
    const token = newId("rot");
    try {
      await saveRotated(deps, item, { ...item, flip: { ...item.flip, token, executionId: undefined } });
    } catch (e) {
      if (e instanceof ConditionFailed) continue; // it moved on meanwhile: nothing to rescue
      throw e;
    }
    await deps.workflows.start("rotate", token, { ref: refOf(item), force: true });
    restarted.push(token);
  }
  return restarted;
}
