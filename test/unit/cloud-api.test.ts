/**
 * The cloud API Lambda (functions/api.ts) in-process: API Gateway HTTP API payload v2 events
 * in, on a dynalite table; KMS, Step Functions and EventBridge (nothing here emulates them)
 * mocked with exact parameters asserted.
 */
import { createHash } from "node:crypto";
import { EventBridgeClient, PutEventsCommand } from "@aws-sdk/client-eventbridge";
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { DescribeExecutionCommand, ListExecutionsCommand, SFNClient, StartExecutionCommand } from "@aws-sdk/client-sfn";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsKeyWrapper } from "../../core/adapters/aws/kms-key-wrapper.ts";
import { StepFunctionsStarter } from "../../core/adapters/aws/sfn-starter.ts";
import { createToken } from "../../core/auth/tokens.ts";
import type { Deps } from "../../core/context.ts";
import { Envelope } from "../../core/crypto/envelope.ts";
import { LocalEventBus } from "../../core/events.ts";
import { createConfig, createProject } from "../../core/projects.ts";
import { makeDeps, startDynalite, type RunningEngine } from "../support/dynamo.ts";

const KEY_ID = "arn:aws:kms:us-east-1:111122223333:key/test-key";
const machines = {
  rotate: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-rotate",
  lease: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-lease",
};
const ref = { project: "shop", config: "prod", name: "DB" };
const executionArn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot-abc-1";
const meta = { $metadata: {} };

const kmsMock = mockClient(KMSClient);
const sfnMock = mockClient(SFNClient);
const ebMock = mockClient(EventBridgeClient);

/** A fake KMS: the data key is a hash of its "wrapped" form, so Decrypt needs no state. */
let wrapCount = 0;
const plaintextOf = (wrapped: Uint8Array) => createHash("sha256").update(wrapped).digest();

type LambdaHandler = (event: unknown, context: unknown) => Promise<{ statusCode: number; body: string; headers?: Record<string, string> }>;
let handler: LambdaHandler;
let db: RunningEngine;
let adminToken: string;
let serviceToken: string;
let otherServiceToken: string;
const savedEnv = { ...process.env };

function event(method: string, path: string, query = "", token?: string) {
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: query,
    headers: { host: "api.example.test", ...(token && { authorization: `Bearer ${token}` }) },
    requestContext: {
      accountId: "111122223333",
      apiId: "api1",
      domainName: "api.example.test",
      domainPrefix: "api",
      http: { method, path, protocol: "HTTP/1.1", sourceIp: "203.0.113.9", userAgent: "rotor-test" },
      requestId: "req-1",
      routeKey: "$default",
      stage: "$default",
      time: "01/Jan/2030:00:00:00 +0000",
      timeEpoch: 1893456000000,
    },
    isBase64Encoded: false,
  };
}

async function call(method: string, path: string, query = "", token?: string) {
  const res = await handler(event(method, path, query, token), { awsRequestId: "req-1" });
  return { status: res.statusCode, body: JSON.parse(res.body) as Record<string, unknown> };
}

beforeAll(async () => {
  db = await startDynalite();
  const test = await makeDeps(db.endpoint);
  kmsMock.on(GenerateDataKeyCommand).callsFake(() => {
    const wrapped = Buffer.from(`wrapped-${++wrapCount}`);
    return { KeyId: KEY_ID, CiphertextBlob: wrapped, Plaintext: plaintextOf(wrapped) };
  });
  kmsMock.on(DecryptCommand).callsFake((input: { CiphertextBlob: Uint8Array }) => ({ KeyId: KEY_ID, Plaintext: plaintextOf(input.CiphertextBlob) }));
  ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: "e1" }], ...meta });
  sfnMock.on(StartExecutionCommand).resolves({ executionArn, startDate: new Date("2030-01-01T00:00:00Z"), ...meta });
  sfnMock.on(DescribeExecutionCommand, { executionArn }).resolves({
    executionArn,
    stateMachineArn: machines.rotate,
    name: "rot-abc-1",
    status: "RUNNING",
    startDate: new Date("2030-01-01T00:00:00Z"),
    input: JSON.stringify({ ref, force: true }),
    ...meta,
  });
  sfnMock.on(ListExecutionsCommand).resolves({ executions: [], ...meta });

  // Tokens and a rotation's index row written the way the cloud writes them: same table, KMS.
  const deps: Deps = {
    table: test.table,
    envelope: new Envelope(new KmsKeyWrapper(new KMSClient({ region: "us-east-1" }), KEY_ID)),
    events: new LocalEventBus(),
    now: () => new Date(),
  };
  await createProject(deps, "test", { name: "shop" });
  await createConfig(deps, "test", { project: "shop", name: "prod" });
  await createConfig(deps, "test", { project: "shop", name: "dev" });
  adminToken = (await createToken(deps, "test", { kind: "admin" })).token;
  serviceToken = (await createToken(deps, "test", { kind: "service", project: "shop", config: "prod", access: "read" })).token;
  otherServiceToken = (await createToken(deps, "test", { kind: "service", project: "shop", config: "dev", access: "read" })).token;
  await new StepFunctionsStarter(new SFNClient({ region: "us-east-1" }), machines, test.table).start("rotate", "rot-abc-1", { ref, force: true });

  Object.assign(process.env, {
    ROTOR_MODE: "cloud",
    ROTOR_TABLE: test.tableName,
    ROTOR_KMS_KEY_ID: KEY_ID,
    ROTOR_EVENT_BUS: "rotor-bus",
    ROTOR_ROTATE_MACHINE_ARN: machines.rotate,
    ROTOR_LEASE_MACHINE_ARN: machines.lease,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
  });
  handler = (await import("../../functions/api.ts")).handler as unknown as LambdaHandler;
});

afterAll(async () => {
  process.env = savedEnv;
  [kmsMock, sfnMock, ebMock].forEach((m) => m.restore());
  await db?.stop();
});

describe("the cloud API Lambda", () => {
  it("answers /health", async () => {
    expect(await call("GET", "/health")).toEqual({ status: 200, body: { ok: true } });
  });

  it("answers bad requests with 4xx JSON {error, message}", async () => {
    const noToken = await call("GET", "/v3/executions");
    expect(noToken.status).toBe(401);
    expect(noToken.body).toEqual({ error: "unauthorized", message: expect.any(String) });
    const badLimit = await call("GET", "/v3/executions", "limit=0", adminToken);
    expect(badLimit.status).toBe(400);
    expect(badLimit.body).toMatchObject({ error: expect.any(String), message: expect.any(String) });
  });

  it("lists executions for an admin (all, from Step Functions) and for a secret (from the index)", async () => {
    sfnMock.resetHistory();
    const all = await call("GET", "/v3/executions", "limit=5", adminToken);
    expect(all).toEqual({ status: 200, body: { executions: [] } });
    expect(sfnMock.commandCalls(ListExecutionsCommand).map((c) => c.args[0].input)).toEqual([
      { stateMachineArn: machines.rotate, maxResults: 5 },
      { stateMachineArn: machines.lease, maxResults: 5 },
    ]);
    const one = await call("GET", "/v3/executions", "project=shop&config=prod&secret=DB", serviceToken);
    expect(one).toEqual({
      status: 200,
      body: { executions: [{ id: executionArn, name: "rot-abc-1", machine: "rotor-rotate", status: "RUNNING", startedAt: "2030-01-01T00:00:00.000Z", ref }] },
    });
  });

  it("lets a service token of the execution's config read it by its URL-encoded ARN, and no other", async () => {
    sfnMock.resetHistory();
    const path = `/v3/executions/${encodeURIComponent(executionArn)}`;
    const mine = await call("GET", path, "", serviceToken);
    expect(mine.status).toBe(200);
    expect(mine.body.execution).toEqual({ id: executionArn, name: "rot-abc-1", machine: "rotor-rotate", status: "RUNNING", startedAt: "2030-01-01T00:00:00.000Z", ref });
    expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input)).toEqual([{ executionArn }]);
    const other = await call("GET", path, "", otherServiceToken);
    expect(other.status).toBe(403);
    expect(other.body).toMatchObject({ error: "forbidden" });
  });

  it("lists a flip the scheduler started (not through the API) once its first task ran", async () => {
    const scheduledArn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot-sched-2";
    sfnMock.on(DescribeExecutionCommand, { executionArn: scheduledArn }).resolves({
      executionArn: scheduledArn,
      stateMachineArn: machines.rotate,
      name: "rot-sched-2",
      status: "RUNNING",
      startDate: new Date("2030-01-02T00:00:00Z"),
      input: JSON.stringify({ ref, force: false }),
      ...meta,
    });
    const createSecret = (await import("../../functions/rotation/create-secret.ts")).handler;
    // The task's Parameters as rotate.asl.json passes them; the secret itself isn't in this table,
    // so the flip step refuses, but the execution is listed first.
    await expect(createSecret({ ref, force: false, token: "rot-sched-2", executionId: scheduledArn, startedAt: "2030-01-02T00:00:00.000Z" })).rejects.toMatchObject({ name: "FlipLost" });
    const listed = await call("GET", "/v3/executions", "project=shop&config=prod&secret=DB", serviceToken);
    expect(listed.status).toBe(200);
    expect((listed.body.executions as Array<{ id: string }>).map((e) => e.id)).toEqual([scheduledArn, executionArn]);
  });
});
