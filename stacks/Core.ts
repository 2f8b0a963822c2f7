import fs from "node:fs";
import path from "node:path";
import { ArnFormat, Aws, CfnParameter, Duration, Fn, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as apigwv2 from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import * as scheduler from "aws-cdk-lib/aws-scheduler";
import * as sfn from "aws-cdk-lib/aws-stepfunctions";
import type { Construct } from "constructs";
import type { StackContext } from "sst/constructs";
import { useProject } from "sst/project.js";
import { API, RECONCILER, TASKS, WEBHOOK_DELIVERY, type HandlerSpec } from "./handlers.ts";
import { keyStatement, rotorFunction, tableStatement } from "./lambda.ts";

/**
 * Everything Rotor runs in its own account (DESIGN.md "cloud"), in one stack:
 *  - storage: the single table and the master key;
 *  - workflows: the rotate and lease state machines from statemachines/*.asl.json, each
 *    `${…FunctionArn}` substituted by its task Lambda (stacks/handlers.ts);
 *  - scheduling: the Scheduler group Rotor's per-secret schedules live in, and the role
 *    those schedules use (states:StartExecution on the rotate machine, nothing else);
 *  - activity: the event bus, and a rule that hands every event to webhook delivery;
 *  - the lease reconciler, every minute; the HTTP API.
 * Each function's IAM statements and environment follow from its `uses` in handlers.ts.
 *
 * Names are `<stage>-<app>[-what]` and the state machine ARNs are built from their names,
 * not referenced: FinishSecret (a task of the rotate machine) schedules the next flip of
 * that same machine, and a reference would make a dependency cycle.
 *
 * Deploy-time inputs:
 *  - SSM parameter `/rotor/<stage>/email-from` (String): the verified SES sender, e.g.
 *    `rotor@example.com` (the address or its domain must be a verified SES identity).
 *    Read at deploy through the `EmailFrom` stack parameter; create it before the first deploy.
 *  - The ExternalId customers put in their role's trust policy is this stack's id (the
 *    UUID in AWS::StackId), output as `AgentExternalId`: nothing to create, stable for the
 *    life of the stack.
 */
export function Core({ stack, app }: StackContext) {
  dropUnusedSstHandler(stack);
  const prefix = `${app.stage}-${app.name}`;
  const { table, key } = storage(stack, app.stage);
  const shared = sharedResources(stack, prefix, app.stage);
  const ctx: GrantContext = { table, key, ...shared };

  const tasks = workflows(stack, ctx);
  const api = httpApi(stack, ctx);
  const reconciler = fn(stack, RECONCILER, ctx, "Rotor lease reconciler");
  new events.Rule(stack, "ReconcileLeasesSchedule", {
    ruleName: `${prefix}-reconcile-leases`,
    description: "Rotor: revoke leases past expiry that no workflow revoked",
    schedule: events.Schedule.rate(Duration.minutes(1)),
    targets: [new targets.LambdaFunction(reconciler, { retryAttempts: 0 })],
  });
  const webhookDelivery = fn(stack, WEBHOOK_DELIVERY, ctx, "Rotor webhook delivery");
  new events.Rule(stack, "WebhookDeliveryRule", {
    eventBus: shared.bus,
    description: "Rotor: every activity event to the project's webhooks",
    eventPattern: { source: ["rotor"] },
    // Delivery retries each webhook itself and never throws for a receiver's failure, so a
    // retry here would only re-deliver to receivers that already took the event.
    targets: [new targets.LambdaFunction(webhookDelivery, { retryAttempts: 2, maxEventAge: Duration.hours(1) })],
  });

  stack.addOutputs({
    ApiUrl: api.url,
    JwksUrl: `${api.url}.well-known/jwks.json`,
    TableName: table.tableName,
    KeyArn: key.keyArn,
    EventBusName: shared.bus.eventBusName,
    ScheduleGroupName: shared.scheduleGroupName,
    RotateStateMachineArn: shared.machineArns.rotate,
    LeaseStateMachineArn: shared.machineArns.lease,
    // What a customer's agent template needs (docs/customer-agent.md).
    RotorAccountId: Aws.ACCOUNT_ID,
    AgentExternalId: shared.externalId,
  });
  return { table, key, ...shared, ...api, tasks, reconciler, webhookDelivery };
}

/**
 * SST's Stack always adds a "CustomResourceHandler" Lambda (Node 22, x86, logs on "*",
 * no retention) for SST constructs' custom resources. Rotor uses none of them (plain CDK
 * functions, no sourcemap upload), so it goes: no unused function with broad permissions.
 */
function dropUnusedSstHandler(stack: Stack): void {
  stack.node.tryRemoveChild("CustomResourceHandler");
}

interface Shared {
  bus: events.EventBus;
  scheduleGroupName: string;
  schedulerRole: iam.Role;
  machineNames: { rotate: string; lease: string };
  machineArns: { rotate: string; lease: string };
  emailFrom: string;
  externalId: string;
}

interface GrantContext extends Shared {
  table: dynamodb.ITable;
  key: kms.IKey;
}

function storage(scope: Construct, stage: string) {
  const table = new dynamodb.Table(scope, "Table", {
    partitionKey: { name: "pk", type: dynamodb.AttributeType.STRING },
    sortKey: { name: "sk", type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    removalPolicy: RemovalPolicy.RETAIN,
  });
  // "Due" work: leases by expiry, flips by due time (see core/store/table.ts).
  table.addGlobalSecondaryIndex({
    indexName: "gsi1",
    partitionKey: { name: "gsi1pk", type: dynamodb.AttributeType.STRING },
    sortKey: { name: "gsi1sk", type: dynamodb.AttributeType.STRING },
    projectionType: dynamodb.ProjectionType.ALL,
  });

  // Master key for envelope encryption of secret values (data keys per value).
  const key = new kms.Key(scope, "Key", {
    description: `Rotor master key (${stage})`,
    enableKeyRotation: true,
    alias: `alias/rotor-${stage}`,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  return { table, key };
}

function sharedResources(stack: Stack, prefix: string, stage: string): Shared {
  const machineNames = { rotate: `${prefix}-rotate`, lease: `${prefix}-lease` };
  const machineArn = (name: string) =>
    stack.formatArn({ service: "states", resource: "stateMachine", resourceName: name, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
  const machineArns = { rotate: machineArn(machineNames.rotate), lease: machineArn(machineNames.lease) };

  const bus = new events.EventBus(stack, "EventBus", { eventBusName: prefix });

  const group = new scheduler.CfnScheduleGroup(stack, "ScheduleGroup", { name: prefix });
  const scheduleGroupName = group.ref;

  // Per-secret schedules (core/adapters/aws/scheduler.ts) run as this role.
  const schedulerRole = new iam.Role(stack, "SchedulerRole", {
    description: "Rotor: EventBridge Scheduler starts flips of rotated secrets",
    assumedBy: new iam.ServicePrincipal("scheduler.amazonaws.com").withConditions({
      StringEquals: { "aws:SourceAccount": Aws.ACCOUNT_ID },
    }),
    inlinePolicies: {
      StartRotation: new iam.PolicyDocument({
        statements: [new iam.PolicyStatement({ actions: ["states:StartExecution"], resources: [machineArns.rotate] })],
      }),
    },
  });

  const emailFrom = new CfnParameter(stack, "EmailFrom", {
    type: "AWS::SSM::Parameter::Value<String>",
    default: `/rotor/${stage}/email-from`,
    description: "SSM parameter holding the SES sender address Rotor emails from (a verified SES identity, or an address of a verified domain).",
  }).valueAsString;

  const externalId = Fn.select(2, Fn.split("/", Aws.STACK_ID));
  return { bus, scheduleGroupName, schedulerRole, machineNames, machineArns, emailFrom, externalId };
}

/** IAM statements for what a handler `uses`, each naming exactly its resources. */
function statementsFor(spec: HandlerSpec, ctx: GrantContext): iam.PolicyStatement[] {
  const { uses } = spec;
  const stack = Stack.of(ctx.bus);
  const out: iam.PolicyStatement[] = [tableStatement(ctx.table, [...uses.table])];
  if (uses.key) out.push(keyStatement(ctx.key, [...uses.key]));
  if (uses.events) out.push(new iam.PolicyStatement({ actions: ["events:PutEvents"], resources: [ctx.bus.eventBusArn] }));
  if (uses.email) {
    // SES authorizes sending against the identity: the address itself or its domain.
    const identity = (name: string) => stack.formatArn({ service: "ses", resource: "identity", resourceName: name });
    const domain = Fn.select(1, Fn.split("@", ctx.emailFrom));
    out.push(new iam.PolicyStatement({ actions: ["ses:SendEmail"], resources: [identity(ctx.emailFrom), identity(domain)] }));
  }
  if (uses.assumeRole) {
    // Customers' roles (agents, IAM integrations) in any account, named Rotor*, and only
    // with an ExternalId: the customer's trust policy decides which ExternalId.
    out.push(
      new iam.PolicyStatement({
        actions: ["sts:AssumeRole"],
        resources: [`arn:${Aws.PARTITION}:iam::*:role/Rotor*`],
        conditions: { Null: { "sts:ExternalId": "false" } },
      }),
    );
  }
  if (uses.schedules) {
    const schedules = stack.formatArn({ service: "scheduler", resource: "schedule", resourceName: `${ctx.scheduleGroupName}/*` });
    if (uses.schedules === "write") {
      out.push(
        new iam.PolicyStatement({
          actions: ["scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule"],
          resources: [schedules],
        }),
        new iam.PolicyStatement({
          actions: ["iam:PassRole"],
          resources: [ctx.schedulerRole.roleArn],
          conditions: { StringEquals: { "iam:PassedToService": "scheduler.amazonaws.com" } },
        }),
      );
    } else {
      out.push(new iam.PolicyStatement({ actions: ["scheduler:DeleteSchedule"], resources: [schedules] }));
    }
  }
  if (uses.start?.length) {
    out.push(new iam.PolicyStatement({ actions: ["states:StartExecution"], resources: uses.start.map((m) => ctx.machineArns[m]) }));
  }
  if (uses.describeFlips) {
    out.push(
      new iam.PolicyStatement({
        actions: ["states:DescribeExecution"],
        resources: [stack.formatArn({ service: "states", resource: "execution", resourceName: `${ctx.machineNames.rotate}:*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME })],
      }),
    );
  }
  if (uses.readExecutions) {
    const names = [ctx.machineNames.rotate, ctx.machineNames.lease];
    out.push(
      new iam.PolicyStatement({ actions: ["states:ListExecutions"], resources: [ctx.machineArns.rotate, ctx.machineArns.lease] }),
      new iam.PolicyStatement({
        actions: ["states:DescribeExecution", "states:GetExecutionHistory"],
        resources: names.map((n) =>
          stack.formatArn({ service: "states", resource: "execution", resourceName: `${n}:*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME }),
        ),
      }),
    );
  }
  return out;
}

/** The variables functions/lib/cloud.ts reads, only for what the handler uses. */
function environmentFor(spec: HandlerSpec, ctx: GrantContext): Record<string, string> {
  const { uses } = spec;
  const env: Record<string, string> = cloudEnvironment(ctx.table, ctx.key);
  if (uses.events) env.ROTOR_EVENT_BUS = ctx.bus.eventBusName;
  if (uses.email) env.ROTOR_EMAIL_FROM = ctx.emailFrom;
  if (uses.assumeRole) env.ROTOR_EXTERNAL_ID = ctx.externalId;
  if (uses.schedules) {
    env.ROTOR_SCHEDULE_GROUP = ctx.scheduleGroupName;
    env.ROTOR_SCHEDULER_ROLE_ARN = ctx.schedulerRole.roleArn;
    env.ROTOR_ROTATE_MACHINE_ARN = ctx.machineArns.rotate;
  }
  for (const m of uses.start ?? []) env[m === "rotate" ? "ROTOR_ROTATE_MACHINE_ARN" : "ROTOR_LEASE_MACHINE_ARN"] = ctx.machineArns[m];
  return env;
}

/** Environment every Rotor function gets in cloud mode. */
export function cloudEnvironment(table: dynamodb.ITable, key: kms.IKey): Record<string, string> {
  return {
    ROTOR_MODE: "cloud",
    ROTOR_TABLE: table.tableName,
    ROTOR_KMS_KEY_ID: key.keyArn,
  };
}

function fn(scope: Construct, spec: HandlerSpec, ctx: GrantContext, description: string): lambda.Function {
  return rotorFunction(scope, spec.id, {
    handler: spec.handler,
    description,
    environment: environmentFor(spec, ctx),
    statements: statementsFor(spec, ctx),
    timeout: Duration.seconds(spec.timeoutSec ?? 60),
    memorySize: spec.memoryMb ?? 512,
  });
}

/** `${Name}` placeholders of an ASL document, in order of first use. */
export function aslPlaceholders(asl: string): string[] {
  return [...new Set([...asl.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]!))];
}

function workflows(scope: Construct, ctx: GrantContext) {
  const root = useProject().paths.root;
  const functions: Record<string, lambda.Function> = {};
  for (const [placeholder, spec] of Object.entries(TASKS)) {
    functions[placeholder] = fn(scope, spec, ctx, `Rotor ${spec.machine} task ${spec.handler}`);
  }
  const machines = {} as Record<"rotate" | "lease", sfn.StateMachine>;
  for (const machine of ["rotate", "lease"] as const) {
    const asl = fs.readFileSync(path.join(root, "statemachines", `${machine}.asl.json`), "utf8");
    const placeholders = aslPlaceholders(asl);
    const substitutions: Record<string, string> = {};
    for (const p of placeholders) {
      const task = TASKS[p];
      if (!task || task.machine !== machine) throw new Error(`statemachines/${machine}.asl.json uses \${${p}}: add it to TASKS in stacks/handlers.ts`);
      substitutions[p] = functions[p]!.functionArn;
    }
    const id = machine === "rotate" ? "RotateStateMachine" : "LeaseStateMachine";
    const name = ctx.machineNames[machine];
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
      // The vendedlogs prefix keeps Step Functions from growing the account's log resource policy.
      logGroupName: `/aws/vendedlogs/states/${name}`,
      retention: logs.RetentionDays.ONE_MONTH,
    });
    const sm = new sfn.StateMachine(scope, id, {
      stateMachineName: name,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromString(asl),
      definitionSubstitutions: substitutions,
      // Inputs and outputs carry ids only, but execution data stays out of logs regardless.
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: false },
    });
    for (const p of placeholders) functions[p]!.grantInvoke(sm);
    machines[machine] = sm;
  }
  return { functions, machines };
}

function httpApi(scope: Construct, ctx: GrantContext) {
  const apiFunction = fn(scope, API, ctx, "Rotor HTTP API");
  const api = new apigwv2.HttpApi(scope, "HttpApi", {
    description: "Rotor API",
    defaultIntegration: new HttpLambdaIntegration("ApiIntegration", apiFunction, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    }),
  });
  const url = api.url;
  if (!url) throw new Error("HttpApi has no default stage");
  return { apiFunction, api, url };
}

/** What `use(Core)` returns to later stacks. */
export type CoreResources = ReturnType<typeof Core>;
