import { SFNClient } from "@aws-sdk/client-sfn";
import { executionIsRunning } from "../../core/adapters/aws/sfn-starter.ts";
import { reconcileLeases } from "../../core/dynamic/leases.ts";
import { rescueStalledFlips } from "../../core/rotation/rescue.ts";
import { stateMachines } from "../lib/cloud.ts";
import { lambda, type Task } from "../lib/task.ts";

/**
 * Cloud reconciler (scheduled every minute): revokes leases well past expiry, which their
 * workflow should have revoked already, and hands flips whose execution died to a new one.
 * The grace periods leave the workflows their chance first; both repairs are idempotent.
 */
const sfn = new SFNClient({});
export const task: Task = async (deps) => {
  const revoked = await reconcileLeases(deps, () => false, 5 * 60_000);
  const rotate = stateMachines().rotate;
  const restartedFlips = rotate ? await rescueStalledFlips(deps, (token) => executionIsRunning(sfn, rotate, token), { olderThanMs: 15 * 60_000 }) : [];
  return { revoked, restartedFlips: restartedFlips.length };
};
export const handler = lambda(task);
