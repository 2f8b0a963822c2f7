import { revokeLease } from "../../core/dynamic/leases.ts";
import { lambda, type Task } from "../lib/task.ts";
import { LeaseInput } from "./check-lease.ts";

export const task: Task = async (deps, event) => {
  const out = await revokeLease(deps, LeaseInput.parse(event).leaseId, { actor: "rotor:lease" });
  return { outcome: out.outcome }; // ids and outcomes only: never handles or values in the workflow
};
export const handler = lambda(task);
