import type { RotationDeps } from "../../core/rotation/model.ts";

/**
 * A workflow task: the same function runs as a Lambda (deps built from the environment)
 * and in embedded mode (aws-local-stepfunctions calls it with the embedded deps).
 */
export type Task<I = unknown, O = unknown> = (deps: RotationDeps, event: I) => Promise<O>;

let cloudDeps: Promise<RotationDeps> | undefined;

/** Wraps a task as a Lambda handler; cloud deps are built once per container, on first use. */
export function lambda<I, O>(task: Task<I, O>) {
  return async (event: I): Promise<O> => {
    cloudDeps ??= import("./cloud.ts").then((m) => m.cloudDeps());
    return task(await cloudDeps, event);
  };
}
