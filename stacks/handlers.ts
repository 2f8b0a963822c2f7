/**
 * Every Lambda Rotor deploys, with what its handler does in AWS. Pure data: stacks/Core.ts
 * turns each entry into IAM statements and environment variables, `bundleSizes()` builds
 * each handler, and test/infra checks the template against the same facts written out
 * by hand (so a change here without a matching test change fails).
 *
 * The task entries repeat functions/registry.ts's `file` per ASL placeholder on purpose:
 * importing the registry would load every task (and pg, mysql2, …) into `sst deploy`'s
 * config bundle. test/infra/rotor-stack.test.ts checks the two agree.
 */

export const TABLE_GET = ["dynamodb:GetItem"] as const;
/** Read-modify-conditional-write of single items (no deletes, no queries). */
export const TABLE_ITEM_WRITE = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"] as const;
/** Plus the "due" index query. */
export const TABLE_ITEM_WRITE_QUERY = [...TABLE_ITEM_WRITE, "dynamodb:Query"] as const;
export const TABLE_ALL = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"] as const;

export const TABLE_PUT_QUERY = ["dynamodb:PutItem", "dynamodb:Query"] as const;

export const KEY_SEAL = ["kms:GenerateDataKey"] as const;
export const KEY_OPEN = ["kms:Decrypt"] as const;
export const KEY_SEAL_OPEN = ["kms:GenerateDataKey", "kms:Decrypt"] as const;

/** What one handler touches. Absent = not at all (no statement, no environment variable). */
export interface Uses {
  table: readonly string[];
  /** KMS actions on the master key. Signing agent requests needs both (the key pair is sealed). */
  key?: readonly string[];
  /** events:PutEvents on Rotor's bus (activity entries). */
  events?: boolean;
  /** ses:SendEmail from the sender identity. */
  email?: boolean;
  /** sts:AssumeRole of customers' `Rotor*` roles with an ExternalId (agents, IAM integrations). */
  assumeRole?: boolean;
  /** "write": create/update/delete/get schedules (+ iam:PassRole of the scheduler role); "delete": remove only. */
  schedules?: "write" | "delete";
  /** states:StartExecution on these machines. */
  start?: readonly ("rotate" | "lease")[];
  /** ListExecutions / DescribeExecution / GetExecutionHistory on both machines. */
  readExecutions?: boolean;
  /** DescribeExecution on the rotate machine's executions only (is a flip's execution alive?). */
  describeFlips?: boolean;
}

export interface HandlerSpec {
  /** Construct id, e.g. "CreateSecretFunction". */
  id: string;
  /** `<file>.<export>` relative to the repo root. */
  handler: string;
  uses: Uses;
  timeoutSec?: number;
  memoryMb?: number;
}

export interface TaskSpec extends HandlerSpec {
  machine: "rotate" | "lease";
}

/** ASL placeholder → task Lambda. */
export const TASKS: Record<string, TaskSpec> = {
  CreateSecretFunctionArn: {
    machine: "rotate",
    id: "CreateSecretFunction",
    handler: "functions/rotation/create-secret.handler",
    uses: { table: TABLE_ITEM_WRITE, key: KEY_SEAL },
  },
  SetSecretFunctionArn: {
    machine: "rotate",
    id: "SetSecretFunction",
    handler: "functions/rotation/set-secret.handler",
    uses: { table: TABLE_ITEM_WRITE, key: KEY_SEAL_OPEN, assumeRole: true },
  },
  TestSecretFunctionArn: {
    machine: "rotate",
    id: "TestSecretFunction",
    handler: "functions/rotation/test-secret.handler",
    uses: { table: TABLE_ITEM_WRITE, key: KEY_SEAL_OPEN, assumeRole: true },
  },
  FinishSecretFunctionArn: {
    machine: "rotate",
    id: "FinishSecretFunction",
    handler: "functions/rotation/finish-secret.handler",
    uses: { table: TABLE_ITEM_WRITE, events: true, schedules: "write" },
  },
  RecordFailureFunctionArn: {
    machine: "rotate",
    id: "RecordFailureFunction",
    handler: "functions/rotation/record-failure.handler",
    uses: { table: TABLE_ITEM_WRITE, events: true },
  },
  NotifyFailureFunctionArn: {
    machine: "rotate",
    id: "NotifyFailureFunction",
    handler: "functions/rotation/notify-failure.handler",
    uses: { table: TABLE_GET, email: true },
  },
  PauseRotationFunctionArn: {
    machine: "rotate",
    id: "PauseRotationFunction",
    handler: "functions/rotation/pause-rotation.handler",
    uses: { table: TABLE_ITEM_WRITE, events: true, email: true, schedules: "delete" },
  },
  CheckLeaseFunctionArn: {
    machine: "lease",
    id: "CheckLeaseFunction",
    handler: "functions/leases/check-lease.handler",
    uses: { table: TABLE_GET },
  },
  RevokeLeaseFunctionArn: {
    machine: "lease",
    id: "RevokeLeaseFunction",
    handler: "functions/leases/revoke-lease.handler",
    uses: { table: TABLE_ITEM_WRITE, key: KEY_SEAL_OPEN, events: true, assumeRole: true },
  },
  RecordRevokeFailureFunctionArn: {
    machine: "lease",
    id: "RecordRevokeFailureFunction",
    handler: "functions/leases/record-revoke-failure.handler",
    uses: { table: TABLE_ITEM_WRITE, events: true, email: true },
  },
};

export const API: HandlerSpec = {
  id: "ApiFunction",
  handler: "functions/api.handler",
  uses: {
    table: TABLE_ALL,
    key: KEY_SEAL_OPEN,
    events: true,
    assumeRole: true,
    schedules: "write",
    start: ["rotate", "lease"],
    readExecutions: true,
  },
  // HTTP APIs give up on an integration after 30 s.
  timeoutSec: 29,
  memoryMb: 1024,
};

/** Revokes leases past expiry that no workflow revoked (runs every minute). */
export const RECONCILER: HandlerSpec = {
  id: "ReconcileLeasesFunction",
  handler: "functions/leases/reconcile.handler",
  // Also hands flips whose execution died to a new execution (core/rotation/rescue.ts).
  uses: { table: TABLE_ITEM_WRITE_QUERY, key: KEY_SEAL_OPEN, events: true, assumeRole: true, start: ["rotate"], describeFlips: true },
  // Up to 500 revocations per run, each a cross-account call.
  timeoutSec: 300,
};

/** EventBridge rule target: POSTs each activity event to the project's webhooks. */
export const WEBHOOK_DELIVERY: HandlerSpec = {
  id: "WebhookDeliveryFunction",
  handler: "functions/webhooks/deliver.handler",
  // Lists the project's webhooks, opens each one's sealed HMAC secret, logs every attempt.
  uses: { table: TABLE_PUT_QUERY, key: KEY_OPEN },
  timeoutSec: 120,
};

/** Customer-side agents (stacks/CustomerAgent.ts): engine → handler. */
export const AGENTS = {
  postgres: "functions/agents/postgres.handler",
  mysql: "functions/agents/mysql.handler",
} as const;
export type AgentEngine = keyof typeof AGENTS;

/** Every handler that ships as a Lambda bundle. */
export function allHandlers(): string[] {
  return [API.handler, ...Object.values(TASKS).map((t) => t.handler), RECONCILER.handler, WEBHOOK_DELIVERY.handler, ...Object.values(AGENTS)];
}
