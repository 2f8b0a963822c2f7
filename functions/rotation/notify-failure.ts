import { z } from "zod";
import { notifyFailure } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepSchema } from "./input.ts";

const Input = StepSchema.extend({ failure: z.object({ failureCount: z.number().int().positive() }) });

export const task: Task = (deps, event) => notifyFailure(deps, Input.parse(event));
export const handler = lambda(task);
