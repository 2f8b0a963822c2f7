import type { Task } from "./lib/task.ts";
import { task as createSecret } from "./rotation/create-secret.ts";
import { task as setSecret } from "./rotation/set-secret.ts";
import { task as testSecret } from "./rotation/test-secret.ts";
import { task as finishSecret } from "./rotation/finish-secret.ts";
import { task as recordFailure } from "./rotation/record-failure.ts";
import { task as notifyFailure } from "./rotation/notify-failure.ts";
import { task as pauseRotation } from "./rotation/pause-rotation.ts";
import { task as checkLease } from "./leases/check-lease.ts";
import { task as revokeLease } from "./leases/revoke-lease.ts";
import { task as recordRevokeFailure } from "./leases/record-revoke-failure.ts";

/**
 * Each ASL `${…FunctionArn}` placeholder names one task. The stack substitutes the
 * Lambda's ARN (handler at `file`); embedded mode runs `task` in-process for that state.
 */
export const taskFunctions: Record<string, { file: string; task: Task }> = {
  CreateSecretFunctionArn: { file: "functions/rotation/create-secret.handler", task: createSecret },
  SetSecretFunctionArn: { file: "functions/rotation/set-secret.handler", task: setSecret },
  TestSecretFunctionArn: { file: "functions/rotation/test-secret.handler", task: testSecret },
  FinishSecretFunctionArn: { file: "functions/rotation/finish-secret.handler", task: finishSecret },
  RecordFailureFunctionArn: { file: "functions/rotation/record-failure.handler", task: recordFailure },
  NotifyFailureFunctionArn: { file: "functions/rotation/notify-failure.handler", task: notifyFailure },
  PauseRotationFunctionArn: { file: "functions/rotation/pause-rotation.handler", task: pauseRotation },
  CheckLeaseFunctionArn: { file: "functions/leases/check-lease.handler", task: checkLease },
  RevokeLeaseFunctionArn: { file: "functions/leases/revoke-lease.handler", task: revokeLease },
  RecordRevokeFailureFunctionArn: { file: "functions/leases/record-revoke-failure.handler", task: recordRevokeFailure },
};
