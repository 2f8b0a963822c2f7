import { setSecret } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepSchema } from "./input.ts";

export const task: Task = (deps, event) => setSecret(deps, StepSchema.parse(event));
export const handler = lambda(task);
