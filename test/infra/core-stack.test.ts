/**
 * The Core stack (everything Rotor runs in its own account), synthesized offline (no AWS
 * account, no network) through the same code path as `npm run synth` (stacks/synthesize.ts),
 * with inline placeholder code so it does not depend on bundling (test/infra/bundles.test.ts
 * builds the real bundles).
 *
 * The expected IAM statements are written out by hand per function from what its handler
 * calls (functions/lib/cloud.ts, core/adapters/aws/*): a grant added or lost in
 * stacks/handlers.ts fails here.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as iam from "aws-cdk-lib/aws-iam";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertLeastPrivilege } from "../../stacks/lambda.ts";
import { TASKS } from "../../stacks/handlers.ts";
import { synthesize } from "../../stacks/synthesize.ts";
import { taskFunctions } from "../../functions/registry.ts";
import { ACCOUNT, REGION, findAll, normalize, only, render, renderDeep, roleStatements, sortStmts, type Resource, type Stmt, type TemplateJson } from "./support.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rotor-infra-core-"));
let t: TemplateJson;
let stackName: string;

beforeAll(async () => {
  const { stacks } = await synthesize({ stage: "test", region: REGION, account: ACCOUNT, code: "placeholder", outdir: tmp });
  const core = stacks.find((s) => s.id === "Core")!;
  stackName = core.stackName;
  t = core.template as TemplateJson;
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const ids = () => ({
  table: only(t, "AWS::DynamoDB::Table")[0],
  key: only(t, "AWS::KMS::Key")[0],
  bus: only(t, "AWS::Events::EventBus")[0],
  schedulerRole: only(t, "AWS::IAM::Role", (r) => r.Properties.Description?.includes("Scheduler"))[0],
});

const arn = (service: string, resource: string) => `arn:aws:${service}:${REGION}:${ACCOUNT}:${resource}`;
const ROTATE = arn("states", "stateMachine:test-rotor-rotate");
const LEASE = arn("states", "stateMachine:test-rotor-lease");

/** The Lambda whose description names this handler file (descriptions are set per function). */
function lambdaByHandler(handler: string): [string, Resource] {
  return only(t, "AWS::Lambda::Function", (r) => String(r.Properties.Description).endsWith(handler) || (handler === "functions/api.handler" && r.Properties.Description === "Rotor HTTP API"));
}
const FN_DESCRIPTIONS: Record<string, string> = {
  "functions/api.handler": "Rotor HTTP API",
  "functions/leases/reconcile.handler": "Rotor lease reconciler",
  "functions/webhooks/deliver.handler": "Rotor webhook delivery",
};
function lambdaOf(handler: string): [string, Resource] {
  const description = FN_DESCRIPTIONS[handler];
  if (description) return only(t, "AWS::Lambda::Function", (r) => r.Properties.Description === description);
  return lambdaByHandler(handler);
}

describe("Core stack: storage", () => {
  it("is named after stage and app", () => {
    expect(stackName).toBe("test-rotor-Core");
  });

  it("has one pay-per-request table with pk/sk, gsi1 (ALL), PITR, retained", () => {
    const [, table] = only(t, "AWS::DynamoDB::Table");
    expect(table.Properties).toMatchObject({
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
      BillingMode: "PAY_PER_REQUEST",
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      GlobalSecondaryIndexes: [
        {
          IndexName: "gsi1",
          KeySchema: [
            { AttributeName: "gsi1pk", KeyType: "HASH" },
            { AttributeName: "gsi1sk", KeyType: "RANGE" },
          ],
          Projection: { ProjectionType: "ALL" },
        },
      ],
    });
    expect(table.Properties.GlobalSecondaryIndexes).toHaveLength(1);
    expect(new Set(table.Properties.AttributeDefinitions)).toEqual(
      new Set([
        { AttributeName: "pk", AttributeType: "S" },
        { AttributeName: "sk", AttributeType: "S" },
        { AttributeName: "gsi1pk", AttributeType: "S" },
        { AttributeName: "gsi1sk", AttributeType: "S" },
      ]),
    );
    expect(table).toMatchObject({ DeletionPolicy: "Retain", UpdateReplacePolicy: "Retain" });
  });

  it("has a rotating KMS key with alias/rotor-<stage>", () => {
    const [keyId, key] = only(t, "AWS::KMS::Key");
    expect(key.Properties.EnableKeyRotation).toBe(true);
    const [, alias] = only(t, "AWS::KMS::Alias");
    expect(alias.Properties).toEqual({ AliasName: "alias/rotor-test", TargetKeyId: { "Fn::GetAtt": [keyId, "Arn"] } });
  });
});

describe("Core stack: every Lambda", () => {
  it("is one of Rotor's 13 functions (SST's unused CustomResourceHandler is gone)", () => {
    const handlers = ["functions/api.handler", ...Object.values(TASKS).map((x) => x.handler), "functions/leases/reconcile.handler", "functions/webhooks/deliver.handler"];
    const fns = findAll(t, "AWS::Lambda::Function");
    expect(fns).toHaveLength(13);
    expect(new Set(handlers.map((h) => lambdaOf(h)[0]))).toEqual(new Set(fns.map(([id]) => id)));
    expect(Object.keys(t.Resources).filter((id) => id.startsWith("CustomResourceHandler"))).toEqual([]);
  });

  it("runs Node 20 on arm64 and logs to its own log group kept one month", () => {
    const logGroupsUsed = new Set<string>();
    for (const [id, fn] of findAll(t, "AWS::Lambda::Function")) {
      expect(fn.Properties.Runtime, id).toBe("nodejs20.x");
      expect(fn.Properties.Architectures, id).toEqual(["arm64"]);
      const logGroupId = fn.Properties.LoggingConfig.LogGroup.Ref as string;
      const logGroup = t.Resources[logGroupId]!;
      expect(logGroup.Type, id).toBe("AWS::Logs::LogGroup");
      expect(logGroup.Properties.RetentionInDays, id).toBe(30);
      logGroupsUsed.add(logGroupId);
    }
    expect(logGroupsUsed.size).toBe(13);
    // No legacy Custom::LogRetention (its singleton Lambda has logs:* on "*").
    expect(findAll(t, "Custom::LogRetention")).toEqual([]);
  });

  it("has its own role: trusted by Lambda only, no managed or inline policies, one attached policy", () => {
    for (const [id, fn] of findAll(t, "AWS::Lambda::Function")) {
      const roleId = fn.Properties.Role["Fn::GetAtt"][0] as string;
      const role = t.Resources[roleId]!;
      expect(role.Properties.ManagedPolicyArns, id).toBeUndefined();
      expect(role.Properties.Policies, id).toBeUndefined();
      expect(role.Properties.AssumeRolePolicyDocument.Statement, id).toEqual([
        { Action: "sts:AssumeRole", Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" } },
      ]);
      expect(findAll(t, "AWS::IAM::Policy", (p) => p.Properties.Roles.some((r: any) => r.Ref === roleId)), id).toHaveLength(1);
      const users = findAll(t, "AWS::Lambda::Function", (f) => f.Properties.Role["Fn::GetAtt"][0] === roleId);
      expect(users, `${roleId} is shared`).toHaveLength(1);
    }
    expect(findAll(t, "AWS::IAM::ManagedPolicy")).toEqual([]);
  });
});

describe("Core stack: least privilege per function", () => {
  // Statement builders, from the test's own reading of each handler.
  const S = {
    table: (...actions: string[]): Stmt => {
      const table = `{${ids().table}.Arn}`;
      return { Effect: "Allow", Action: actions.map((a) => `dynamodb:${a}`).sort(), Resource: (actions.includes("Query") ? [table, `${table}/index/*`] : [table]).sort() };
    },
    key: (...actions: string[]): Stmt => ({ Effect: "Allow", Action: actions.map((a) => `kms:${a}`).sort(), Resource: [`{${ids().key}.Arn}`] }),
    events: (): Stmt => ({ Effect: "Allow", Action: ["events:PutEvents"], Resource: [`{${ids().bus}.Arn}`] }),
    email: (): Stmt => ({
      Effect: "Allow",
      Action: ["ses:SendEmail"],
      Resource: [arn("ses", "identity/{EmailFrom}"), arn("ses", 'identity/split({EmailFrom},"@")[1]')].sort(),
    }),
    assumeRole: (): Stmt => ({
      Effect: "Allow",
      Action: ["sts:AssumeRole"],
      Resource: ["arn:aws:iam::*:role/Rotor*"],
      Condition: { Null: { "sts:ExternalId": "false" } },
    }),
    schedules: (): Stmt[] => [
      {
        Effect: "Allow",
        Action: ["scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule", "scheduler:UpdateSchedule"],
        Resource: [arn("scheduler", "schedule/{ScheduleGroup}/*")],
      },
      {
        Effect: "Allow",
        Action: ["iam:PassRole"],
        Resource: [`{${ids().schedulerRole}.Arn}`],
        Condition: { StringEquals: { "iam:PassedToService": "scheduler.amazonaws.com" } },
      },
    ],
    deleteSchedule: (): Stmt => ({ Effect: "Allow", Action: ["scheduler:DeleteSchedule"], Resource: [arn("scheduler", "schedule/{ScheduleGroup}/*")] }),
    ownLogs: (fnId: string): Stmt => ({
      Effect: "Allow",
      Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
      Resource: [`{${t.Resources[fnId]!.Properties.LoggingConfig.LogGroup.Ref}.Arn}`],
    }),
  };

  const expected: Record<string, () => Stmt[]> = {
    "functions/api.handler": () => [
      S.table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"),
      S.key("GenerateDataKey", "Decrypt"),
      S.events(),
      S.assumeRole(),
      ...S.schedules(),
      { Effect: "Allow", Action: ["states:StartExecution"], Resource: [LEASE, ROTATE] },
      { Effect: "Allow", Action: ["states:ListExecutions"], Resource: [LEASE, ROTATE] },
      {
        Effect: "Allow",
        Action: ["states:DescribeExecution", "states:GetExecutionHistory"],
        Resource: [arn("states", "execution:test-rotor-lease:*"), arn("states", "execution:test-rotor-rotate:*")],
      },
    ],
    "functions/rotation/create-secret.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.key("GenerateDataKey")],
    "functions/rotation/set-secret.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.key("GenerateDataKey", "Decrypt"), S.assumeRole()],
    "functions/rotation/test-secret.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.key("GenerateDataKey", "Decrypt"), S.assumeRole()],
    "functions/rotation/finish-secret.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.events(), ...S.schedules()],
    "functions/rotation/record-failure.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.events()],
    "functions/rotation/notify-failure.handler": () => [S.table("GetItem"), S.email()],
    "functions/rotation/pause-rotation.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.events(), S.email(), S.deleteSchedule()],
    "functions/leases/check-lease.handler": () => [S.table("GetItem")],
    "functions/leases/revoke-lease.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.key("GenerateDataKey", "Decrypt"), S.events(), S.assumeRole()],
    "functions/leases/record-revoke-failure.handler": () => [S.table("GetItem", "PutItem", "UpdateItem"), S.events(), S.email()],
    "functions/leases/reconcile.handler": () => [
      S.table("GetItem", "PutItem", "UpdateItem", "Query"),
      S.key("GenerateDataKey", "Decrypt"),
      S.events(),
      S.assumeRole(),
      { Effect: "Allow", Action: ["states:StartExecution"], Resource: [ROTATE] },
      { Effect: "Allow", Action: ["states:DescribeExecution"], Resource: [arn("states", "execution:test-rotor-rotate:*")] },
    ],
    "functions/webhooks/deliver.handler": () => [S.table("PutItem", "Query"), S.key("Decrypt")],
  };

  it.each(Object.keys(expected))("%s has exactly its statements", (handler) => {
    const [fnId, fn] = lambdaOf(handler);
    const roleId = fn.Properties.Role["Fn::GetAtt"][0] as string;
    expect(sortStmts(roleStatements(t, roleId))).toEqual(sortStmts([...expected[handler]!(), S.ownLogs(fnId)]));
  });

  const base = () => ({ ROTOR_MODE: "cloud", ROTOR_TABLE: `{${ids().table}}`, ROTOR_KMS_KEY_ID: `{${ids().key}.Arn}` });
  const bus = () => ({ ROTOR_EVENT_BUS: `{${ids().bus}}` });
  const email = { ROTOR_EMAIL_FROM: "{EmailFrom}" };
  const external = { ROTOR_EXTERNAL_ID: 'split({AWS::StackId},"/")[2]' };
  const schedules = () => ({ ROTOR_SCHEDULE_GROUP: "{ScheduleGroup}", ROTOR_SCHEDULER_ROLE_ARN: `{${ids().schedulerRole}.Arn}`, ROTOR_ROTATE_MACHINE_ARN: ROTATE });
  const env: Record<string, () => Record<string, string>> = {
    "functions/api.handler": () => ({ ...base(), ...bus(), ...external, ...schedules(), ROTOR_LEASE_MACHINE_ARN: LEASE }),
    "functions/rotation/create-secret.handler": base,
    "functions/rotation/set-secret.handler": () => ({ ...base(), ...external }),
    "functions/rotation/test-secret.handler": () => ({ ...base(), ...external }),
    "functions/rotation/finish-secret.handler": () => ({ ...base(), ...bus(), ...schedules() }),
    "functions/rotation/record-failure.handler": () => ({ ...base(), ...bus() }),
    "functions/rotation/notify-failure.handler": () => ({ ...base(), ...email }),
    "functions/rotation/pause-rotation.handler": () => ({ ...base(), ...bus(), ...email, ...schedules() }),
    "functions/leases/check-lease.handler": base,
    "functions/leases/revoke-lease.handler": () => ({ ...base(), ...bus(), ...external }),
    "functions/leases/record-revoke-failure.handler": () => ({ ...base(), ...bus(), ...email }),
    "functions/leases/reconcile.handler": () => ({ ...base(), ...bus(), ...external, ROTOR_ROTATE_MACHINE_ARN: ROTATE }),
    "functions/webhooks/deliver.handler": base,
  };

  it.each(Object.keys(env))("%s gets exactly the environment functions/lib/cloud.ts reads for it", (handler) => {
    const [, fn] = lambdaOf(handler);
    expect(renderDeep(fn.Properties.Environment.Variables)).toEqual(env[handler]!());
  });

  it('no policy grants "*" except the Step Functions log delivery AWS requires', () => {
    const logDelivery = [
      "logs:CreateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:DescribeLogGroups",
      "logs:DescribeResourcePolicies",
      "logs:GetLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:UpdateLogDelivery",
    ];
    const machineRoles = findAll(t, "AWS::StepFunctions::StateMachine").map(([, m]) => m.Properties.RoleArn["Fn::GetAtt"][0]);
    const statements: Array<{ owner: string; s: Stmt }> = [];
    for (const [id, p] of findAll(t, "AWS::IAM::Policy")) {
      for (const s of p.Properties.PolicyDocument.Statement) statements.push({ owner: p.Properties.Roles.map((r: any) => r.Ref).join(), s: normalize(s) });
    }
    for (const [id, r] of findAll(t, "AWS::IAM::Role")) {
      expect(r.Properties.ManagedPolicyArns, id).toBeUndefined();
      for (const p of r.Properties.Policies ?? []) for (const s of p.PolicyDocument.Statement) statements.push({ owner: id, s: normalize(s) });
    }
    const star = statements.filter(({ s }) => s.Resource.includes("*"));
    expect(star.map((x) => x.owner).sort()).toEqual([...machineRoles].sort());
    for (const { s } of star) expect(s).toEqual({ Effect: "Allow", Action: logDelivery, Resource: ["*"] });
    for (const { owner, s } of statements) {
      expect(s.Action.some((a) => a.includes("*")), `${owner} ${s.Action}`).toBe(false);
      // Wildcards inside ARNs only where an ARN names a family: indexes, schedules, executions, customers' Rotor* roles, versions.
      for (const r of s.Resource.filter((x) => x !== "*" && x.includes("*"))) {
        expect(r, owner).toMatch(/(\/index\/\*|:schedule\/\{ScheduleGroup\}\/\*|:execution:test-rotor-(rotate|lease):\*|^arn:aws:iam::\*:role\/Rotor\*|\.Arn\}:\*)$/);
      }
    }
  });
});

describe("Core stack: state machines", () => {
  for (const machine of ["rotate", "lease"] as const) {
    describe(machine, () => {
      const file = () => fs.readFileSync(path.join(ROOT, "statemachines", `${machine}.asl.json`), "utf8");
      const sm = () => only(t, "AWS::StepFunctions::StateMachine", (r) => r.Properties.StateMachineName === `test-rotor-${machine}`);

      it("is a named STANDARD machine whose ASL equals the file with each ${…FunctionArn} replaced by its Lambda's ARN", () => {
        const [, m] = sm();
        expect(m.Properties.StateMachineType).toBe("STANDARD");
        const text = typeof m.Properties.DefinitionString === "string" ? m.Properties.DefinitionString : render(m.Properties.DefinitionString);
        const subs = m.Properties.DefinitionSubstitutions as Record<string, unknown>;
        const placeholders = [...new Set([...file().matchAll(/\$\{(\w+)\}/g)].map((x) => x[1]!))];
        expect(placeholders.length).toBeGreaterThan(2);
        expect(Object.keys(subs).sort()).toEqual([...placeholders].sort());

        // What Step Functions will run: the template's definition with its substitutions applied…
        const deployed = JSON.parse(text.replace(/\$\{(\w+)\}/g, (_, p: string) => render(subs[p])));
        // …equals the file with each placeholder replaced by the ARN of the Lambda that runs the registry's handler.
        const expectedAsl = JSON.parse(
          file().replace(/\$\{(\w+)\}/g, (_, p: string) => {
            const entry = taskFunctions[p];
            if (!entry) throw new Error(`registry has no ${p}`);
            return `{${lambdaOf(entry.file)[0]}.Arn}`;
          }),
        );
        expect(deployed).toEqual(expectedAsl);
        const tasks = Object.values(deployed.States as Record<string, any>).filter((s) => s.Type === "Task");
        expect(tasks.length).toBe(placeholders.length);
        for (const s of tasks) expect(s.Resource).toMatch(/^\{\w+\.Arn\}$/);
      });

      it("logs ALL events without execution data to a log group kept one month", () => {
        const [, m] = sm();
        expect(m.Properties.LoggingConfiguration).toMatchObject({ IncludeExecutionData: false, Level: "ALL" });
        const lgId = m.Properties.LoggingConfiguration.Destinations[0].CloudWatchLogsLogGroup.LogGroupArn["Fn::GetAtt"][0];
        expect(t.Resources[lgId]!.Properties).toMatchObject({ LogGroupName: `/aws/vendedlogs/states/test-rotor-${machine}`, RetentionInDays: 30 });
        expect(m.Properties.TracingConfiguration).toBeUndefined();
      });

      it("may invoke exactly its own task Lambdas (plus the log delivery AWS requires on *)", () => {
        const [, m] = sm();
        const roleId = m.Properties.RoleArn["Fn::GetAtt"][0];
        expect(t.Resources[roleId]!.Properties.AssumeRolePolicyDocument.Statement).toEqual([
          { Action: "sts:AssumeRole", Effect: "Allow", Principal: { Service: "states.amazonaws.com" } },
        ]);
        const invoke = roleStatements(t, roleId).filter((s) => !s.Resource.includes("*"));
        const mine = Object.entries(taskFunctions)
          .filter(([p]) => TASKS[p]!.machine === machine)
          .map(([, e]) => lambdaOf(e.file)[0]);
        expect(sortStmts(invoke)).toEqual(
          sortStmts(mine.map((id) => ({ Effect: "Allow", Action: ["lambda:InvokeFunction"], Resource: [`{${id}.Arn}`, `{${id}.Arn}:*`] }))),
        );
      });
    });
  }

  it("stacks/handlers.ts TASKS agree with functions/registry.ts and the ASL files", () => {
    expect(Object.keys(TASKS).sort()).toEqual(Object.keys(taskFunctions).sort());
    for (const [p, spec] of Object.entries(TASKS)) {
      expect(spec.handler, p).toBe(taskFunctions[p]!.file);
      expect(fs.readFileSync(path.join(ROOT, "statemachines", `${spec.machine}.asl.json`), "utf8"), p).toContain(`\${${p}}`);
    }
  });
});

describe("Core stack: scheduling", () => {
  it("has the schedule group <stage>-<app>", () => {
    const [, group] = only(t, "AWS::Scheduler::ScheduleGroup");
    expect(group.Properties.Name).toBe("test-rotor");
  });

  it("gives schedules a role trusted by EventBridge Scheduler (this account) that may only start the rotate machine", () => {
    const { schedulerRole } = ids();
    const role = t.Resources[schedulerRole]!;
    expect(renderDeep(role.Properties.AssumeRolePolicyDocument.Statement)).toEqual([
      {
        Action: "sts:AssumeRole",
        Effect: "Allow",
        Principal: { Service: "scheduler.amazonaws.com" },
        Condition: { StringEquals: { "aws:SourceAccount": ACCOUNT } },
      },
    ]);
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    expect(roleStatements(t, schedulerRole)).toEqual([{ Effect: "Allow", Action: ["states:StartExecution"], Resource: [ROTATE] }]);
  });

  it("runs the lease reconciler every minute on the default bus", () => {
    const [fnId] = lambdaOf("functions/leases/reconcile.handler");
    const [ruleId, rule] = only(t, "AWS::Events::Rule", (r) => !!r.Properties.ScheduleExpression);
    expect(rule.Properties).toMatchObject({ ScheduleExpression: "rate(1 minute)", State: "ENABLED", Name: "test-rotor-reconcile-leases" });
    expect(rule.Properties.EventBusName).toBeUndefined();
    expect(rule.Properties.Targets).toHaveLength(1);
    expect(rule.Properties.Targets[0].Arn).toEqual({ "Fn::GetAtt": [fnId, "Arn"] });
    only(t, "AWS::Lambda::Permission", (p) =>
      p.Properties.Principal === "events.amazonaws.com" && p.Properties.FunctionName["Fn::GetAtt"]?.[0] === fnId && p.Properties.SourceArn["Fn::GetAtt"][0] === ruleId,
    );
    expect(t.Resources[fnId]!.Properties.Timeout).toBe(300);
  });
});

describe("Core stack: activity", () => {
  it("has the event bus <stage>-<app>, and a rule sending every `rotor` event to webhook delivery", () => {
    const [busId, bus] = only(t, "AWS::Events::EventBus");
    expect(bus.Properties.Name).toBe("test-rotor");
    const [fnId] = lambdaOf("functions/webhooks/deliver.handler");
    const [ruleId, rule] = only(t, "AWS::Events::Rule", (r) => !!r.Properties.EventPattern);
    expect(rule.Properties.EventBusName).toEqual({ Ref: busId });
    expect(rule.Properties.EventPattern).toEqual({ source: ["rotor"] });
    expect(rule.Properties.Targets).toEqual([
      { Arn: { "Fn::GetAtt": [fnId, "Arn"] }, Id: "Target0", RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 2 } },
    ]);
    only(t, "AWS::Lambda::Permission", (p) =>
      p.Properties.Principal === "events.amazonaws.com" && p.Properties.FunctionName["Fn::GetAtt"]?.[0] === fnId && p.Properties.SourceArn["Fn::GetAtt"][0] === ruleId,
    );
  });

  it("reads the SES sender from SSM parameter /rotor/<stage>/email-from", () => {
    expect(t.Parameters!.EmailFrom).toMatchObject({ Type: "AWS::SSM::Parameter::Value<String>", Default: "/rotor/test/email-from" });
  });
});

describe("Core stack: HTTP API and outputs", () => {
  it("serves the API function on an HTTP API: $default route, payload 2.0", () => {
    const [fnId] = lambdaOf("functions/api.handler");
    const fn = t.Resources[fnId]!;
    expect(fn.Properties).toMatchObject({ Handler: "index.handler", Timeout: 29, MemorySize: 1024 });
    const [apiId] = only(t, "AWS::ApiGatewayV2::Api", (r) => r.Properties.ProtocolType === "HTTP");
    const [integrationId, integration] = only(t, "AWS::ApiGatewayV2::Integration");
    expect(integration.Properties).toMatchObject({ ApiId: { Ref: apiId }, IntegrationType: "AWS_PROXY", IntegrationUri: { "Fn::GetAtt": [fnId, "Arn"] }, PayloadFormatVersion: "2.0" });
    const [, route] = only(t, "AWS::ApiGatewayV2::Route");
    expect(route.Properties).toMatchObject({ ApiId: { Ref: apiId }, RouteKey: "$default", Target: { "Fn::Join": ["", ["integrations/", { Ref: integrationId }]] } });
    const [, stage] = only(t, "AWS::ApiGatewayV2::Stage");
    expect(stage.Properties).toMatchObject({ ApiId: { Ref: apiId }, StageName: "$default", AutoDeploy: true });
    only(t, "AWS::Lambda::Permission", (p) => p.Properties.Principal === "apigateway.amazonaws.com" && p.Properties.FunctionName["Fn::GetAtt"]?.[0] === fnId);
  });

  it("outputs what operators and customers need", () => {
    const [apiId] = only(t, "AWS::ApiGatewayV2::Api");
    const out = Object.fromEntries(Object.entries(t.Outputs!).filter(([k]) => k !== "SSTMetadata").map(([k, v]) => [k, render(v.Value)]));
    expect(out).toEqual({
      ApiUrl: `https://{${apiId}}.execute-api.${REGION}.amazonaws.com/`,
      JwksUrl: `https://{${apiId}}.execute-api.${REGION}.amazonaws.com/.well-known/jwks.json`,
      TableName: `{${ids().table}}`,
      KeyArn: `{${ids().key}.Arn}`,
      EventBusName: `{${ids().bus}}`,
      ScheduleGroupName: "{ScheduleGroup}",
      RotateStateMachineArn: ROTATE,
      LeaseStateMachineArn: LEASE,
      RotorAccountId: ACCOUNT,
      AgentExternalId: 'split({AWS::StackId},"/")[2]',
    });
  });
});

describe("rotorFunction guard", () => {
  it('rejects "*" resources and wildcard actions', () => {
    const star = new iam.PolicyStatement({ actions: ["dynamodb:GetItem"], resources: ["*"] });
    const wild = new iam.PolicyStatement({ actions: ["dynamodb:*"], resources: ["arn:aws:dynamodb:us-east-1:1:table/t"] });
    const ok = new iam.PolicyStatement({ actions: ["dynamodb:GetItem"], resources: ["arn:aws:dynamodb:us-east-1:1:table/t"] });
    expect(() => assertLeastPrivilege("x", [star])).toThrow(/no "\*"/);
    expect(() => assertLeastPrivilege("x", [wild])).toThrow(/explicit actions/);
    expect(() => assertLeastPrivilege("x", [ok])).not.toThrow();
  });
});
