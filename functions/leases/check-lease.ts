import { z } from "zod";
import { checkLease } from "../../core/dynamic/leases.ts";
import { lambda, type Task } from "../lib/task.ts";

export const LeaseInput = z.object({ leaseId: z.string().regex(/^lease_[A-Za-z0-9]+$/) });

export const task: Task = (deps, event) => checkLease(deps, LeaseInput.parse(event).leaseId);
export const handler = lambda(task);
