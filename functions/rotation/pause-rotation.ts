import { pauseRotation } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepErrorSchema, StepSchema } from "./input.ts";

export const task: Task = (deps, event) => pauseRotation(deps, StepSchema.extend({ error: StepErrorSchema }).parse(event));
export const handler = lambda(task);
