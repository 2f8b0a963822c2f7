import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { EventBridgeClient, PutEventsCommand } from "@aws-sdk/client-eventbridge";
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";
import {
  ConflictException,
  CreateScheduleCommand,
  DeleteScheduleCommand,
  ResourceNotFoundException,
  SchedulerClient,
  UpdateScheduleCommand,
  ValidationException,
} from "@aws-sdk/client-scheduler";
import { SendEmailCommand, SESv2Client } from "@aws-sdk/client-sesv2";
import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  GetExecutionHistoryCommand,
  InvalidArn,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
} from "@aws-sdk/client-sfn";
import { AssumeRoleCommand, STSClient } from "@aws-sdk/client-sts";
import { mockClient } from "aws-sdk-client-mock";
import { SMTPServer } from "smtp-server";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { EventBridgeBus } from "../../core/adapters/aws/eventbridge-bus.ts";
import { AssumedRoleCache, LambdaAgentTransport, lambdaFunctionName } from "../../core/adapters/aws/lambda-transport.ts";
import { atExpression, EventBridgeRotationScheduler, scheduleName } from "../../core/adapters/aws/scheduler.ts";
import { SesNotifier } from "../../core/adapters/aws/ses-notifier.ts";
import { executionIsRunning, SfnExecutionReader, StepFunctionsStarter } from "../../core/adapters/aws/sfn-starter.ts";
import { HttpAgentTransport } from "../../core/adapters/http-transport.ts";
import { LogNotifier, SmtpNotifier } from "../../core/adapters/local/smtp-notifier.ts";
import type { RotorEvent } from "../../core/events.ts";
import type { Table } from "../../core/store/table.ts";
import { makeDeps, startDynalite, type RunningEngine } from "../support/dynamo.ts";

const schedulerMock = mockClient(SchedulerClient);
const sfnMock = mockClient(SFNClient);
const stsMock = mockClient(STSClient);
const lambdaMock = mockClient(LambdaClient);
const sesMock = mockClient(SESv2Client);
const ebMock = mockClient(EventBridgeClient);
const mocks = [schedulerMock, sfnMock, stsMock, lambdaMock, sesMock, ebMock];

beforeEach(() => mocks.forEach((m) => m.reset()));
afterAll(() => mocks.forEach((m) => m.restore()));

const client = <T>(C: new (c: object) => T) => new C({ region: "us-east-1", credentials: { accessKeyId: "AKIDTEST", secretAccessKey: "test" } });
const meta = { $metadata: {} };
const ref = { project: "shop", config: "prod", name: "DB" };

describe("EventBridgeRotationScheduler", () => {
  const now = new Date("2030-01-01T00:00:00.000Z");
  const scheduler = () =>
    new EventBridgeRotationScheduler({
      client: client(SchedulerClient),
      groupName: "rotor-prod",
      stateMachineArn: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-rotate",
      roleArn: "arn:aws:iam::111122223333:role/rotor-scheduler",
      now: () => now,
    });
  const expected = (expression: string) => ({
    Name: scheduleName(ref),
    GroupName: "rotor-prod",
    Description: "Rotor: next flip of shop/prod/DB",
    ScheduleExpression: expression,
    ScheduleExpressionTimezone: "UTC",
    FlexibleTimeWindow: { Mode: "OFF" },
    ActionAfterCompletion: "NONE",
    State: "ENABLED",
    Target: {
      Arn: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-rotate",
      RoleArn: "arn:aws:iam::111122223333:role/rotor-scheduler",
      Input: JSON.stringify({ ref: { project: "shop", config: "prod", name: "DB" }, force: false }),
      RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 20 },
    },
  });

  it("updates the existing schedule to a one-time at() expression", async () => {
    schedulerMock.on(UpdateScheduleCommand).resolves({ ScheduleArn: "arn:x", ...meta });
    await scheduler().scheduleNext(ref, new Date("2030-01-16T12:00:00.000Z"));
    expect(schedulerMock.commandCalls(UpdateScheduleCommand).map((c) => c.args[0].input)).toEqual([expected("at(2030-01-16T12:00:00)")]);
    expect(schedulerMock.commandCalls(CreateScheduleCommand)).toHaveLength(0);
    expect(scheduleName(ref)).toMatch(/^rotor\.shop\.prod\.DB-[0-9a-f]{12}$/);
  });

  it("creates the schedule when it does not exist yet", async () => {
    schedulerMock.on(UpdateScheduleCommand).rejects(new ResourceNotFoundException({ message: "no schedule", Message: "no schedule", ...meta }));
    schedulerMock.on(CreateScheduleCommand).resolves({ ScheduleArn: "arn:x", ...meta });
    await scheduler().scheduleNext(ref, new Date("2030-01-16T12:00:00.000Z"));
    expect(schedulerMock.commandCalls(UpdateScheduleCommand)).toHaveLength(1);
    expect(schedulerMock.commandCalls(CreateScheduleCommand).map((c) => c.args[0].input)).toEqual([expected("at(2030-01-16T12:00:00)")]);
  });

  it("updates again when a concurrent create won the race", async () => {
    schedulerMock
      .on(UpdateScheduleCommand)
      .rejectsOnce(new ResourceNotFoundException({ message: "no schedule", Message: "no schedule", ...meta }))
      .resolves({ ScheduleArn: "arn:x", ...meta });
    schedulerMock.on(CreateScheduleCommand).rejects(new ConflictException({ message: "exists", Message: "exists", ...meta }));
    await scheduler().scheduleNext(ref, new Date("2030-01-16T12:00:00.000Z"));
    const updates = schedulerMock.commandCalls(UpdateScheduleCommand).map((c) => c.args[0].input);
    expect(updates).toEqual([expected("at(2030-01-16T12:00:00)"), expected("at(2030-01-16T12:00:00)")]);
    expect(schedulerMock.commandCalls(CreateScheduleCommand)).toHaveLength(1);
  });

  it("propagates other errors without creating", async () => {
    schedulerMock.on(UpdateScheduleCommand).rejects(new ValidationException({ message: "bad", Message: "bad", ...meta }));
    await expect(scheduler().scheduleNext(ref, new Date("2030-01-16T12:00:00.000Z"))).rejects.toThrow("bad");
    expect(schedulerMock.commandCalls(CreateScheduleCommand)).toHaveLength(0);
  });

  it("never fires before the flip is due: rounds up to the minute, overdue → a minute from now", () => {
    expect(atExpression(new Date("2030-01-16T12:00:00.000Z"), now)).toBe("at(2030-01-16T12:00:00)");
    expect(atExpression(new Date("2030-01-16T12:00:00.001Z"), now)).toBe("at(2030-01-16T12:01:00)");
    expect(atExpression(new Date("2030-01-16T12:00:30.000Z"), now)).toBe("at(2030-01-16T12:01:00)");
    expect(atExpression(new Date("2029-12-01T00:00:00.000Z"), now)).toBe("at(2030-01-01T00:01:00)");
    expect(atExpression(new Date("2029-12-01T00:00:00.000Z"), new Date("2030-01-01T00:00:10.000Z"))).toBe("at(2030-01-01T00:02:00)");
  });

  it("derives short, valid, distinct, deterministic names from long refs", () => {
    const long = { project: "p".repeat(64), config: "c".repeat(64), name: "N".repeat(256) };
    const long2 = { ...long, name: "N".repeat(255) + "X" };
    const other = { project: "a.b", config: "c", name: "D" };
    const other2 = { project: "a", config: "b.c", name: "D" };
    const names = [long, long2, other, other2, ref].map(scheduleName);
    for (const n of names) {
      expect(n.length).toBeLessThanOrEqual(64);
      expect(n).toMatch(/^[0-9a-zA-Z_.-]{1,64}$/);
    }
    expect(new Set(names).size).toBe(names.length);
    expect(scheduleName({ ...long })).toBe(names[0]);
  });

  it("removes the schedule, and a missing one counts as removed", async () => {
    schedulerMock.on(DeleteScheduleCommand).resolvesOnce(meta).rejects(new ResourceNotFoundException({ message: "gone", Message: "gone", ...meta }));
    await scheduler().remove(ref);
    await scheduler().remove(ref);
    expect(schedulerMock.commandCalls(DeleteScheduleCommand).map((c) => c.args[0].input)).toEqual([
      { Name: scheduleName(ref), GroupName: "rotor-prod" },
      { Name: scheduleName(ref), GroupName: "rotor-prod" },
    ]);
    schedulerMock.on(DeleteScheduleCommand).rejects(new ValidationException({ message: "denied", Message: "denied", ...meta }));
    await expect(scheduler().remove(ref)).rejects.toThrow("denied");
  });
});

describe("StepFunctionsStarter and SfnExecutionReader", () => {
  const machines = {
    rotate: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-rotate",
    lease: "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-lease",
  };
  const input = { ref, force: true };
  let db: RunningEngine;
  let table: Table;
  beforeAll(async () => {
    db = await startDynalite();
  });
  afterAll(() => db?.stop());
  beforeEach(async () => {
    table = (await makeDeps(db.endpoint)).table;
  });

  it("starts an execution with the machine's ARN, the name and the JSON input", async () => {
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:tok1", startDate: new Date(), ...meta });
    const out = await new StepFunctionsStarter(client(SFNClient), machines, table).start("rotate", "tok1", input);
    expect(out).toEqual({ executionId: "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:tok1" });
    expect(sfnMock.commandCalls(StartExecutionCommand).map((c) => c.args[0].input)).toEqual([
      { stateMachineArn: machines.rotate, name: "tok1", input: JSON.stringify(input) },
    ]);
  });

  it("treats ExecutionAlreadyExists as the same execution", async () => {
    sfnMock.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: "exists", ...meta }));
    const out = await new StepFunctionsStarter(client(SFNClient), machines, table).start("lease", "lease-42", { leaseId: "42" });
    expect(out).toEqual({ executionId: "arn:aws:states:us-east-1:111122223333:execution:rotor-lease:lease-42" });
    expect(sfnMock.commandCalls(StartExecutionCommand).map((c) => c.args[0].input)).toEqual([
      { stateMachineArn: machines.lease, name: "lease-42", input: '{"leaseId":"42"}' },
    ]);
  });

  it("propagates other start errors", async () => {
    sfnMock.on(StartExecutionCommand).rejects(new Error("throttled"));
    await expect(new StepFunctionsStarter(client(SFNClient), machines, table).start("rotate", "t", {})).rejects.toThrow("throttled");
  });

  it("describes an execution", async () => {
    const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:tok1";
    sfnMock.on(DescribeExecutionCommand).resolves({
      executionArn: arn,
      stateMachineArn: machines.rotate,
      name: "tok1",
      status: "FAILED",
      startDate: new Date("2030-01-01T00:00:00Z"),
      stopDate: new Date("2030-01-01T00:01:00Z"),
      error: "AgentUnreachable",
      cause: "agent unreachable (lambda)",
      input: JSON.stringify(input),
      ...meta,
    });
    const info = await new SfnExecutionReader(client(SFNClient), machines, table).get(arn);
    expect(info).toEqual({
      id: arn,
      name: "tok1",
      machine: "rotor-rotate",
      status: "FAILED",
      startedAt: "2030-01-01T00:00:00.000Z",
      stoppedAt: "2030-01-01T00:01:00.000Z",
      error: "AgentUnreachable",
      cause: "agent unreachable (lambda)",
      ref,
    });
    expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input)).toEqual([{ executionArn: arn }]);
    sfnMock.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: "nope", ...meta }));
    await expect(new SfnExecutionReader(client(SFNClient), machines, table).get(arn)).rejects.toMatchObject({ code: "not_found", status: 404 });
    sfnMock.on(DescribeExecutionCommand).rejects(new InvalidArn({ message: "bad arn", ...meta }));
    await expect(new SfnExecutionReader(client(SFNClient), machines, table).get("not-an-arn")).rejects.toMatchObject({ code: "not_found", status: 404 });
  });

  it("indexes a started rotation under its secret; list reads the index and refreshes running rows", async () => {
    const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot-1";
    const startDate = new Date("2030-01-01T00:00:00Z");
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: arn, startDate, ...meta });
    const starter = new StepFunctionsStarter(client(SFNClient), machines, table);
    await starter.start("rotate", "rot-1", input);
    // A repeated start of the same name (Step Functions answers with the same execution) adds no row.
    await starter.start("rotate", "rot-1", input);
    sfnMock.on(DescribeExecutionCommand).resolves({
      executionArn: arn, stateMachineArn: machines.rotate, name: "rot-1", status: "SUCCEEDED", startDate, stopDate: new Date("2030-01-01T00:02:00Z"), input: JSON.stringify(input), ...meta,
    });
    const reader = new SfnExecutionReader(client(SFNClient), machines, table);
    const expected = { id: arn, name: "rot-1", machine: "rotor-rotate", status: "SUCCEEDED", startedAt: "2030-01-01T00:00:00.000Z", stoppedAt: "2030-01-01T00:02:00.000Z", ref };
    expect(await reader.list({ secret: ref, limit: 20 })).toEqual([expected]);
    expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input)).toEqual([{ executionArn: arn }]);
    // The ended row was written back: listing again asks Step Functions nothing.
    expect(await reader.list({ secret: ref, limit: 20 })).toEqual([expected]);
    expect(sfnMock.commandCalls(DescribeExecutionCommand)).toHaveLength(1);
    expect(await reader.list({ secret: { ...ref, name: "OTHER" }, limit: 20 })).toEqual([]);
    expect(sfnMock.commandCalls(StartExecutionCommand).map((c) => c.args[0].input)).toEqual([
      { stateMachineArn: machines.rotate, name: "rot-1", input: JSON.stringify(input) },
      { stateMachineArn: machines.rotate, name: "rot-1", input: JSON.stringify(input) },
    ]);
  });

  it("lists a secret's executions newest first, at most limit, describing only running rows", async () => {
    const arnOf = (n: number) => `arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot-${n}`;
    const starter = new StepFunctionsStarter(client(SFNClient), machines, table);
    for (const n of [1, 2, 3]) {
      sfnMock.on(StartExecutionCommand).resolves({ executionArn: arnOf(n), startDate: new Date(`2030-01-0${n}T00:00:00Z`), ...meta });
      await starter.start("rotate", `rot-${n}`, input);
    }
    sfnMock.on(DescribeExecutionCommand).callsFake(({ executionArn }: { executionArn: string }) => ({
      executionArn, stateMachineArn: machines.rotate, name: executionArn.split(":").pop(), status: "RUNNING", startDate: new Date(0), input: JSON.stringify(input),
    }));
    const out = await new SfnExecutionReader(client(SFNClient), machines, table).list({ secret: ref, limit: 2 });
    expect(out.map((e) => [e.id, e.status, e.startedAt])).toEqual([
      [arnOf(3), "RUNNING", "1970-01-01T00:00:00.000Z"],
      [arnOf(2), "RUNNING", "1970-01-01T00:00:00.000Z"],
    ]);
    expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input.executionArn).sort()).toEqual([arnOf(2), arnOf(3)]);
  });

  it("indexes a start that Step Functions refuses as already existing at the execution's own start date", async () => {
    const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot-9";
    sfnMock.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: "exists", ...meta }));
    sfnMock.on(DescribeExecutionCommand).resolves({
      executionArn: arn, stateMachineArn: machines.rotate, name: "rot-9", status: "FAILED", startDate: new Date("2030-02-01T00:00:00Z"), error: "Boom", input: JSON.stringify(input), ...meta,
    });
    await new StepFunctionsStarter(client(SFNClient), machines, table).start("rotate", "rot-9", input);
    expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input)).toEqual([{ executionArn: arn }]);
    const listed = await new SfnExecutionReader(client(SFNClient), machines, table).list({ secret: ref, limit: 5 });
    expect(listed).toEqual([{ id: arn, name: "rot-9", machine: "rotor-rotate", status: "FAILED", startedAt: "2030-02-01T00:00:00.000Z", error: "Boom", ref }]);
  });

  it("lists every execution of both machines newest first with ListExecutions", async () => {
    const ex = (m: "rotate" | "lease", n: string, day: number, status: "RUNNING" | "SUCCEEDED") => ({
      executionArn: `arn:aws:states:us-east-1:111122223333:execution:rotor-${m}:${n}`,
      stateMachineArn: machines[m],
      name: n,
      status,
      startDate: new Date(`2030-01-0${day}T00:00:00Z`),
      ...(status !== "RUNNING" && { stopDate: new Date(`2030-01-0${day}T00:05:00Z`) }),
    });
    sfnMock
      .on(ListExecutionsCommand, { stateMachineArn: machines.rotate })
      .resolves({ executions: [ex("rotate", "r2", 3, "RUNNING"), ex("rotate", "r1", 1, "SUCCEEDED")], ...meta })
      .on(ListExecutionsCommand, { stateMachineArn: machines.lease })
      .resolves({ executions: [ex("lease", "l1", 2, "SUCCEEDED")], ...meta });
    const out = await new SfnExecutionReader(client(SFNClient), machines, table).list({ limit: 2 });
    expect(out).toEqual([
      { id: ex("rotate", "r2", 3, "RUNNING").executionArn, name: "r2", machine: "rotor-rotate", status: "RUNNING", startedAt: "2030-01-03T00:00:00.000Z" },
      { id: ex("lease", "l1", 2, "SUCCEEDED").executionArn, name: "l1", machine: "rotor-lease", status: "SUCCEEDED", startedAt: "2030-01-02T00:00:00.000Z", stoppedAt: "2030-01-02T00:05:00.000Z" },
    ]);
    expect(sfnMock.commandCalls(ListExecutionsCommand).map((c) => c.args[0].input)).toEqual([
      { stateMachineArn: machines.rotate, maxResults: 2 },
      { stateMachineArn: machines.lease, maxResults: 2 },
    ]);
  });

  it("gives a lease execution the lease id as its ref", async () => {
    const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-lease:lease-42";
    sfnMock.on(DescribeExecutionCommand).resolves({
      executionArn: arn, stateMachineArn: machines.lease, name: "lease-42", status: "RUNNING", startDate: new Date("2030-01-01T00:00:00Z"), input: '{"leaseId":"42","expiresAt":"2030-01-02T00:00:00Z"}', ...meta,
    });
    expect((await new SfnExecutionReader(client(SFNClient), machines, table).get(arn)).ref).toEqual({ leaseId: "42" });
  });

  it("reads every page of the history, keeping state names and errors, never data", async () => {
    const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:tok1";
    const t = new Date("2030-01-01T00:00:00Z");
    sfnMock
      .on(GetExecutionHistoryCommand, { executionArn: arn, maxResults: 1000, nextToken: undefined, includeExecutionData: false })
      .resolves({
        events: [
          { id: 1, type: "ExecutionStarted", timestamp: t, executionStartedEventDetails: { input: '{"ref":1}', roleArn: "r" } },
          { id: 2, type: "TaskStateEntered", timestamp: t, stateEnteredEventDetails: { name: "CreateSecret", input: '{"x":"in"}' } },
        ],
        nextToken: "page2",
        ...meta,
      })
      .on(GetExecutionHistoryCommand, { executionArn: arn, maxResults: 1000, nextToken: "page2", includeExecutionData: false })
      .resolves({
        events: [
          { id: 3, type: "LambdaFunctionFailed", timestamp: t, previousEventId: 2, lambdaFunctionFailedEventDetails: { error: "Retryable", cause: "db down" } },
          { id: 4, type: "TaskStateExited", timestamp: t, stateExitedEventDetails: { name: "CreateSecret", output: '{"y":"out"}' } },
        ],
        ...meta,
      });
    const events = await new SfnExecutionReader(client(SFNClient), machines, table).history(arn);
    expect(events).toEqual([
      { id: 1, type: "ExecutionStarted", timestamp: "2030-01-01T00:00:00.000Z" },
      { id: 2, type: "TaskStateEntered", timestamp: "2030-01-01T00:00:00.000Z", stateName: "CreateSecret" },
      { id: 3, type: "LambdaFunctionFailed", timestamp: "2030-01-01T00:00:00.000Z", error: "Retryable", cause: "db down" },
      { id: 4, type: "TaskStateExited", timestamp: "2030-01-01T00:00:00.000Z", stateName: "CreateSecret" },
    ]);
    expect(sfnMock.commandCalls(GetExecutionHistoryCommand).map((c) => c.args[0].input)).toEqual([
      { executionArn: arn, maxResults: 1000, nextToken: undefined, includeExecutionData: false },
      { executionArn: arn, maxResults: 1000, nextToken: "page2", includeExecutionData: false },
    ]);
  });
});

describe("executionIsRunning (the flip rescuer's liveness check)", () => {
  const machine = "arn:aws:states:us-east-1:111122223333:stateMachine:rotor-rotate";
  const arn = "arn:aws:states:us-east-1:111122223333:execution:rotor-rotate:rot_abc";
  it("asks DescribeExecution for the named execution: RUNNING is alive; ended or unknown is not", async () => {
    const cases: Array<[() => void, boolean]> = [
      [() => sfnMock.on(DescribeExecutionCommand).resolves({ status: "RUNNING", ...meta }), true],
      [() => sfnMock.on(DescribeExecutionCommand).resolves({ status: "FAILED", ...meta }), false],
      [() => sfnMock.on(DescribeExecutionCommand).resolves({ status: "ABORTED", ...meta }), false],
      [() => sfnMock.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: "nope", ...meta })), false],
    ];
    for (const [arrange, alive] of cases) {
      sfnMock.reset();
      arrange();
      expect(await executionIsRunning(client(SFNClient), machine, "rot_abc")).toBe(alive);
      expect(sfnMock.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input)).toEqual([{ executionArn: arn }]);
    }
  });
  it("lets other errors through: a throttled check must not restart a live flip", async () => {
    sfnMock.reset();
    sfnMock.on(DescribeExecutionCommand).rejects(Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" }));
    await expect(executionIsRunning(client(SFNClient), machine, "rot_abc")).rejects.toThrow("Rate exceeded");
  });
});

describe("LambdaAgentTransport", () => {
  const spec = {
    transport: "lambda" as const,
    functionArn: "arn:aws:lambda:eu-west-2:444455556666:function:Rotor_postgres",
    roleArn: "arn:aws:iam::444455556666:role/RotorAccess",
    region: "eu-west-2",
  };
  const jws = "eyJhbGciOiJFUzUxMiJ9.eyJ0eXBlIjoic3RhdHVzIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
  let clock = new Date("2030-01-01T00:00:00Z");
  const stsCredentials = (n: number) => ({
    Credentials: { AccessKeyId: `ASIA${n}`, SecretAccessKey: `secret${n}`, SessionToken: `token${n}`, Expiration: new Date(clock.getTime() + 900_000) },
    ...meta,
  });
  const answer = (body: unknown, extra: Record<string, unknown> = {}) => ({ StatusCode: 200, Payload: new TextEncoder().encode(JSON.stringify(body)) as never, ...extra, ...meta });
  const transport = (cache = new AssumedRoleCache(), s: typeof spec = spec) =>
    new LambdaAgentTransport(s, { externalId: "wp-external-id-123", cache, now: () => clock });

  beforeEach(() => {
    clock = new Date("2030-01-01T00:00:00Z");
  });

  it("assumes the role with the ExternalId, then invokes the agent in its region with those credentials", async () => {
    stsMock.on(AssumeRoleCommand).resolves(stsCredentials(1));
    lambdaMock.on(InvokeCommand).resolves(answer({ status: "ok", body: { type: "valid" } }));
    const out = await transport().send(jws);
    expect(out).toEqual({ status: "ok", body: { type: "valid" } });
    const assumes = stsMock.commandCalls(AssumeRoleCommand).map((c) => c.args[0].input);
    expect(assumes).toEqual([
      { RoleArn: spec.roleArn, RoleSessionName: expect.stringMatching(/^rotor-[0-9a-f]{12}$/), ExternalId: "wp-external-id-123", DurationSeconds: 900 },
    ]);
    const invokes = lambdaMock.commandCalls(InvokeCommand);
    expect(invokes.map((c) => c.args[0].input)).toEqual([
      { FunctionName: spec.functionArn, InvocationType: "RequestResponse", Payload: JSON.stringify({ body: jws }) },
    ]);
    const lambda = invokes[0].thisValue as LambdaClient;
    expect(await lambda.config.region()).toBe("eu-west-2");
    expect(await lambda.config.credentials()).toMatchObject({ accessKeyId: "ASIA1", secretAccessKey: "secret1", sessionToken: "token1" });
    expect(await (stsMock.commandCalls(AssumeRoleCommand)[0].thisValue as STSClient).config.region()).toBe("eu-west-2");
  });

  it("caches credentials per role until a minute before they expire, across transports", async () => {
    stsMock.on(AssumeRoleCommand).resolvesOnce(stsCredentials(1)).resolves(stsCredentials(2));
    lambdaMock.on(InvokeCommand).resolves(answer({ status: "ok", body: {} }));
    const cache = new AssumedRoleCache();
    await transport(cache).send(jws);
    clock = new Date(clock.getTime() + 13 * 60_000);
    await transport(cache).send(jws);
    expect(stsMock.commandCalls(AssumeRoleCommand)).toHaveLength(1);
    clock = new Date(clock.getTime() + 60_000 + 1); // within a minute of expiry
    await transport(cache).send(jws);
    expect(stsMock.commandCalls(AssumeRoleCommand)).toHaveLength(2);
    const creds = await Promise.all(lambdaMock.commandCalls(InvokeCommand).map((c) => (c.thisValue as LambdaClient).config.credentials()));
    expect(creds.map((c) => c.accessKeyId)).toEqual(["ASIA1", "ASIA1", "ASIA2"]);
    // another role is assumed separately
    await transport(cache, { ...spec, roleArn: "arn:aws:iam::444455556666:role/RotorOther" }).send(jws);
    expect(stsMock.commandCalls(AssumeRoleCommand).map((c) => c.args[0].input.RoleArn)).toEqual([spec.roleArn, spec.roleArn, "arn:aws:iam::444455556666:role/RotorOther"]);
  });

  it("refuses any function whose name does not start with Rotor_, before any AWS call", async () => {
    for (const functionArn of [
      "arn:aws:lambda:eu-west-2:444455556666:function:postgres-agent",
      "arn:aws:lambda:eu-west-2:444455556666:function:rotor_postgres",
      "arn:aws:lambda:eu-west-2:444455556666:function:Evil:Rotor_alias",
      "arn:aws:lambda:eu-west-2:444455556666:function:XRotor_postgres",
    ]) {
      await expect(transport(new AssumedRoleCache(), { ...spec, functionArn }).send(jws)).rejects.toMatchObject({ status: 403 });
    }
    expect(stsMock.calls()).toHaveLength(0);
    expect(lambdaMock.calls()).toHaveLength(0);
    expect(lambdaFunctionName("arn:aws:lambda:eu-west-2:444455556666:function:Rotor_pg:live")).toBe("Rotor_pg");
  });

  it("accepts a qualified Rotor_ function", async () => {
    stsMock.on(AssumeRoleCommand).resolves(stsCredentials(1));
    lambdaMock.on(InvokeCommand).resolves(answer({ status: "ok", body: {} }));
    await transport(new AssumedRoleCache(), { ...spec, functionArn: `${spec.functionArn}:live` }).send(jws);
    expect(lambdaMock.commandCalls(InvokeCommand)[0].args[0].input.FunctionName).toBe(`${spec.functionArn}:live`);
  });

  it("turns a FunctionError into a short message without the request or tokens", async () => {
    stsMock.on(AssumeRoleCommand).resolves(stsCredentials(1));
    lambdaMock.on(InvokeCommand).resolves(
      answer(
        { errorType: "TypeError", errorMessage: `cannot read ${jws} near aGVsbG8taGVsbG8taGVsbG8taGVsbG8= ${"x ".repeat(300)}`, trace: ["at secret (/var/task/index.js)"] },
        { FunctionError: "Unhandled" },
      ),
    );
    const err = (await transport().send(jws).catch((e) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/^agent function failed \(Unhandled\): TypeError: cannot read \[jws\] near \[redacted\]/);
    expect(err.message).not.toContain(jws);
    expect(err.message).not.toContain("aGVsbG8taGVsbG8taGVsbG8taGVsbG8");
    expect(err.message).not.toContain("/var/task");
    expect(err.message.length).toBeLessThan(300);
  });

  it("throws when the agent answers something that is not JSON", async () => {
    stsMock.on(AssumeRoleCommand).resolves(stsCredentials(1));
    lambdaMock.on(InvokeCommand).resolves({ StatusCode: 200, Payload: new TextEncoder().encode("<html>") as never, ...meta });
    await expect(transport().send(jws)).rejects.toThrow("not JSON");
  });
});

describe("HttpAgentTransport", () => {
  let server: Server;
  let url: string;
  const received: Array<{ method?: string; type?: string; body: string }> = [];
  let reply: (req: IncomingMessage, res: import("node:http").ServerResponse) => void;
  const readBody = async (req: IncomingMessage) => {
    let s = "";
    for await (const chunk of req) s += chunk;
    return s;
  };

  beforeEach(async () => {
    received.length = 0;
    if (server) return;
    server = createServer(async (req, res) => {
      received.push({ method: req.method, type: req.headers["content-type"], body: await readBody(req) });
      reply(req, res);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/agent`;
  });
  afterAll(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  it("POSTs the JWS as application/jose and returns the JSON answer", async () => {
    reply = (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok","body":{"type":"valid"}}');
    expect(await new HttpAgentTransport({ url }).send("a.b.c")).toEqual({ status: "ok", body: { type: "valid" } });
    expect(received).toEqual([{ method: "POST", type: "application/jose", body: "a.b.c" }]);
  });

  it("returns a JSON protocol error whatever the status", async () => {
    reply = (_req, res) => res.writeHead(401).end('{"status":"error","metadata":{"code":"unauthorized","message":"bad signature","retryable":false}}');
    expect(await new HttpAgentTransport({ url }).send("a.b.c")).toMatchObject({ status: "error" });
  });

  it("throws on a non-JSON answer, without its body", async () => {
    reply = (_req, res) => res.writeHead(502).end("<html>upstream secret-ish page</html>");
    const err = (await new HttpAgentTransport({ url }).send("a.b.c").catch((e) => e)) as Error;
    expect(err.message).toBe("agent answered HTTP 502 with a body that is not JSON");
  });

  it("throws on a timeout and on a refused connection", async () => {
    reply = (_req, res) => setTimeout(() => res.end("{}"), 1_000);
    await expect(new HttpAgentTransport({ url }, { timeoutMs: 100 }).send("a.b.c")).rejects.toThrow();
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await expect(new HttpAgentTransport({ url: `http://127.0.0.1:${port}/` }).send("a.b.c")).rejects.toThrow();
  });
});

describe("notifiers", () => {
  it("SesNotifier sends one simple UTF-8 email", async () => {
    sesMock.on(SendEmailCommand).resolves({ MessageId: "m1", ...meta });
    await new SesNotifier(client(SESv2Client), "rotor@example.com").send({ to: "ops@example.com", subject: "Rotation failing: DB", text: "3 failures — see activity" });
    expect(sesMock.commandCalls(SendEmailCommand).map((c) => c.args[0].input)).toEqual([
      {
        FromEmailAddress: "rotor@example.com",
        Destination: { ToAddresses: ["ops@example.com"] },
        Content: {
          Simple: {
            Subject: { Data: "Rotation failing: DB", Charset: "UTF-8" },
            Body: { Text: { Data: "3 failures — see activity", Charset: "UTF-8" } },
          },
        },
      },
    ]);
  });

  it("SmtpNotifier delivers to a real SMTP server", async () => {
    const messages: Array<{ from: string; to: string[]; raw: string }> = [];
    const smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS"],
      logger: false,
      onData(stream, session, callback) {
        let raw = "";
        stream.on("data", (c: Buffer) => (raw += c.toString("utf8")));
        stream.on("end", () => {
          const from = session.envelope.mailFrom;
          messages.push({ from: from ? from.address : "", to: session.envelope.rcptTo.map((r) => r.address), raw });
          callback();
        });
      },
    });
    await new Promise<void>((r) => smtp.listen(0, "127.0.0.1", () => r()));
    const port = (smtp.server.address() as AddressInfo).port;
    const notifier = new SmtpNotifier(`smtp://127.0.0.1:${port}`, "rotor@localhost");
    try {
      await notifier.send({ to: "ops@example.com", subject: "Rotation paused: DB", text: "The stored password no longer works." });
    } finally {
      notifier.close();
      await new Promise<void>((r) => smtp.close(() => r()));
    }
    expect(messages).toHaveLength(1);
    expect(messages[0].from).toBe("rotor@localhost");
    expect(messages[0].to).toEqual(["ops@example.com"]);
    expect(messages[0].raw).toMatch(/^Subject: Rotation paused: DB\r?$/m);
    expect(messages[0].raw).toMatch(/^To: ops@example\.com\r?$/m);
    expect(messages[0].raw).toContain("The stored password no longer works.");
  });

  it("LogNotifier logs who and what, never the body", async () => {
    const lines: string[] = [];
    await new LogNotifier((l) => lines.push(l)).send({ to: "ops@example.com", subject: "Rotation failing: DB", text: "BODY-MUST-NOT-APPEAR" });
    expect(lines).toEqual(["would email ops@example.com: Rotation failing: DB"]);
  });
});

describe("EventBridgeBus", () => {
  const event: RotorEvent = { id: "ev1", type: "rotation.succeeded", at: "2030-01-01T00:00:00.000Z", actor: "system", project: "shop", config: "prod", detail: { name: "DB" } };

  it("puts one entry on Rotor's bus", async () => {
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: "x" }], ...meta });
    await new EventBridgeBus(client(EventBridgeClient), "rotor-prod").publish(event);
    expect(ebMock.commandCalls(PutEventsCommand).map((c) => c.args[0].input)).toEqual([
      { Entries: [{ Source: "rotor", DetailType: "rotation.succeeded", Detail: JSON.stringify(event), EventBusName: "rotor-prod" }] },
    ]);
  });

  it("throws when the entry failed", async () => {
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 1, Entries: [{ ErrorCode: "InternalFailure", ErrorMessage: "try again" }], ...meta });
    await expect(new EventBridgeBus(client(EventBridgeClient), "rotor-prod").publish(event)).rejects.toThrow(/InternalFailure/);
  });
});
