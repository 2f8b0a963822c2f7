import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { EventBridgeClient } from "@aws-sdk/client-eventbridge";
import { KMSClient } from "@aws-sdk/client-kms";
import { SchedulerClient } from "@aws-sdk/client-scheduler";
import { SESv2Client } from "@aws-sdk/client-sesv2";
import { SFNClient } from "@aws-sdk/client-sfn";
import { AgentClient, type TransportFactory } from "../../core/agents/client.ts";
import { storedSigner } from "../../core/agents/stored-signer.ts";
import { EventBridgeBus } from "../../core/adapters/aws/eventbridge-bus.ts";
import { KmsKeyWrapper } from "../../core/adapters/aws/kms-key-wrapper.ts";
import { LambdaAgentTransport } from "../../core/adapters/aws/lambda-transport.ts";
import { EventBridgeRotationScheduler } from "../../core/adapters/aws/scheduler.ts";
import { SesNotifier } from "../../core/adapters/aws/ses-notifier.ts";
import { StepFunctionsStarter } from "../../core/adapters/aws/sfn-starter.ts";
import { HttpAgentTransport } from "../../core/adapters/http-transport.ts";
import { Envelope } from "../../core/crypto/envelope.ts";
import { dynamicContributor } from "../../core/dynamic/leases.ts";
import { rotatedContributor } from "../../core/rotation/manage.ts";
import { defaultRotationSettings, type RotationDeps } from "../../core/rotation/model.ts";
import type { Deps } from "../../core/context.ts";
import type { EventBus } from "../../core/events.ts";
import { Table } from "../../core/store/table.ts";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
}

/**
 * Activity events go to Rotor's bus (ROTOR_EVENT_BUS). Checked at the first publish, not at
 * start, so functions that never record activity (webhook delivery) need no bus; a function
 * that does and lacks the variable fails loudly instead of dropping events.
 */
export function cloudEventBus(env = process.env): EventBus {
  let bus: EventBridgeBus | undefined;
  return {
    publish: async (event) => {
      const name = env.ROTOR_EVENT_BUS;
      if (!name) throw new Error("missing environment variable ROTOR_EVENT_BUS: activity events cannot be published");
      bus ??= new EventBridgeBus(new EventBridgeClient({}), name);
      return bus.publish(event);
    },
  };
}

/** Table, key and bus: what the API and webhook delivery need. */
export function coreCloudDeps(): Deps {
  return {
    table: new Table(new DynamoDBClient({}), env("ROTOR_TABLE")),
    envelope: new Envelope(new KmsKeyWrapper(new KMSClient({}), env("ROTOR_KMS_KEY_ID"))),
    events: cloudEventBus(),
    now: () => new Date(),
  };
}

/** The workflows' state machines (empty where a function starts and reads none). */
export const stateMachines = (env = process.env) => ({ rotate: env.ROTOR_ROTATE_MACHINE_ARN ?? "", lease: env.ROTOR_LEASE_MACHINE_ARN ?? "" });

/**
 * Cloud wiring from the environment the stack sets. Optional pieces (scheduler, email,
 * agents) are only required by the functions that use them; the stack gives each function
 * exactly the variables and permissions its handler needs.
 */
export async function cloudDeps(): Promise<RotationDeps> {
  const { events, ...base } = coreCloudDeps();
  const externalId = process.env.ROTOR_EXTERNAL_ID ?? "";
  const transports: TransportFactory = (spec) => {
    if (spec.transport === "http") return new HttpAgentTransport(spec);
    if (spec.transport === "lambda") return new LambdaAgentTransport(spec, { externalId });
    throw new Error("the in-process agent exists in embedded mode only: use an http or lambda agent in the cloud");
  };
  const lazySigner = { signer: undefined as Awaited<ReturnType<typeof storedSigner>> | undefined };
  const signer = {
    sign: async (r: Parameters<Awaited<ReturnType<typeof storedSigner>>["sign"]>[0]) => (lazySigner.signer ??= await storedSigner(base)).sign(r),
    jwks: () => {
      if (!lazySigner.signer) throw new Error("signing key not loaded yet");
      return lazySigner.signer.jwks();
    },
  };
  const machines = stateMachines();
  const rotateArn = machines.rotate;
  return {
    ...base,
    events,
    contributors: [rotatedContributor, dynamicContributor],
    agents: new AgentClient(signer, transports),
    workflows: new StepFunctionsStarter(new SFNClient({}), machines, base.table),
    scheduler: new EventBridgeRotationScheduler({
      client: new SchedulerClient({}),
      groupName: process.env.ROTOR_SCHEDULE_GROUP ?? "rotor",
      stateMachineArn: rotateArn,
      roleArn: process.env.ROTOR_SCHEDULER_ROLE_ARN ?? "",
    }),
    notifier: new SesNotifier(new SESv2Client({}), process.env.ROTOR_EMAIL_FROM ?? "rotor@localhost"),
    settings: {
      ...defaultRotationSettings,
      defaultNotifyEmail: process.env.ROTOR_NOTIFY_EMAIL,
      failureThreshold: Number(process.env.ROTOR_FAILURE_THRESHOLD ?? defaultRotationSettings.failureThreshold),
    },
  };
}
