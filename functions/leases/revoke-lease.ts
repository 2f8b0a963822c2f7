import { revokeLease } from "../../core/dynamic/leases.ts";
import { leaseKey } from "../../core/dynamic/model.ts";
import { lambda, type Task } from "../lib/task.ts";
import { LeaseInput } from "./check-lease.ts";

export const task: Task = async (deps, event) => {
  const { leaseId } = LeaseInput.parse(event);
  // No record, nothing to name: retrying could never succeed, so the workflow ends.
  if (!(await deps.table.get(leaseKey(leaseId).pk, leaseKey(leaseId).sk))) return { outcome: "no_lease" };
  const out = await revokeLease(deps, leaseId, { actor: "rotor:lease" });
  return { outcome: out.outcome }; // ids and outcomes only: never handles or values in the workflow
};
export const handler = lambda(task);
