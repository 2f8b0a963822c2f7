import { finishSecret } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepSchema } from "./input.ts";

export const task: Task = (deps, event) => finishSecret(deps, StepSchema.parse(event));
export const handler = lambda(task);
