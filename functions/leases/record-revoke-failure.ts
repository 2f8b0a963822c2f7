import { recordRevokeFailure } from "../../core/dynamic/leases.ts";
import { StepErrorSchema } from "../rotation/input.ts";
import { lambda, type Task } from "../lib/task.ts";
import { LeaseInput } from "./check-lease.ts";

export const task: Task = (deps, event) => {
  const input = LeaseInput.extend({ error: StepErrorSchema }).parse(event);
  return recordRevokeFailure(deps, input.leaseId, input.error);
};
export const handler = lambda(task);
