import { reconcileLeases } from "../../core/dynamic/leases.ts";
import { lambda, type Task } from "../lib/task.ts";

/**
 * Cloud reconciler (scheduled every few minutes): revokes leases well past expiry, which
 * their workflow should have revoked already. Five minutes of grace leaves the workflows
 * their chance first; revocation is idempotent either way.
 */
export const task: Task = async (deps) => ({ revoked: await reconcileLeases(deps, () => false, 5 * 60_000) });
export const handler = lambda(task);
