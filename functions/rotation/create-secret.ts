import { z } from "zod";
import { createSecret } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepSchema } from "./input.ts";

const Input = StepSchema.extend({ force: z.boolean().optional(), executionId: z.string().optional() });

export const task: Task = (deps, event) => createSecret(deps, Input.parse(event));
export const handler = lambda(task);
