import { z } from "zod";
import { indexRotateExecution } from "../../core/adapters/aws/sfn-starter.ts";
import { createSecret } from "../../core/rotation/flip.ts";
import { lambda, type Task } from "../lib/task.ts";
import { StepSchema } from "./input.ts";

const Input = StepSchema.extend({ force: z.boolean().optional(), executionId: z.string().optional(), startedAt: z.string().optional() });

export const task: Task = (deps, event) => createSecret(deps, Input.parse(event));

/**
 * The Lambda also lists its execution under the secret: Step Functions can't list executions
 * by input, and the scheduler starts flips without going through the API's starter.
 */
export const handler = lambda(async (deps, event) => {
  const input = Input.parse(event);
  if (input.executionId?.startsWith("arn:") && input.startedAt) await indexRotateExecution(deps.table, input.ref, input.executionId, new Date(input.startedAt).toISOString());
  return task(deps, event);
});
