import { recordFailure } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepErrorSchema, StepSchema } from "./input.ts";

export const task: Task = (deps, event) => recordFailure(deps, StepSchema.extend({ error: StepErrorSchema }).parse(event));
export const handler = lambda(task);
