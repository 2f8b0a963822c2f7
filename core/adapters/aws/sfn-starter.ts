import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  StartExecutionCommand,
  type HistoryEvent as SfnHistoryEvent,
  type SFNClient,
} from "@aws-sdk/client-sfn";
import { notFound } from "../../errors.ts";
import type { ExecutionInfo, ExecutionStatus, HistoryEvent } from "../../executions.ts";
import type { WorkflowStarter } from "../../rotation/model.ts";

type Machine = "rotate" | "lease";
const errorName = (e: unknown) => (e as { name?: string })?.name;

/** arn:aws:states:r:a:stateMachine:M + name → arn:aws:states:r:a:execution:M:name */
export const executionArnOf = (stateMachineArn: string, name: string) => `${stateMachineArn.replace(":stateMachine:", ":execution:")}:${name}`;

/** Cloud workflows: Step Functions StartExecution; a name already used is the same execution. */
export class StepFunctionsStarter implements WorkflowStarter {
  constructor(private readonly client: SFNClient, private readonly machines: Record<Machine, string>) {}

  async start(machine: Machine, name: string, input: Record<string, unknown>) {
    const stateMachineArn = this.machines[machine];
    if (!stateMachineArn) throw new Error(`no state machine configured for '${machine}'`);
    try {
      const out = await this.client.send(new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }));
      return { executionId: out.executionArn ?? executionArnOf(stateMachineArn, name) };
    } catch (e) {
      if (errorName(e) !== "ExecutionAlreadyExists") throw e;
      return { executionId: executionArnOf(stateMachineArn, name) };
    }
  }
}

/** Reads executions from Step Functions: status and a history of state names, ids and errors. */
export class SfnExecutionReader {
  constructor(private readonly client: SFNClient) {}

  async get(executionArn: string): Promise<ExecutionInfo> {
    try {
      const out = await this.client.send(new DescribeExecutionCommand({ executionArn }));
      return {
        id: out.executionArn ?? executionArn,
        name: out.name ?? executionArn.split(":").pop()!,
        machine: (out.stateMachineArn ?? "").split(":").pop() ?? "",
        status: (out.status ?? "RUNNING") as ExecutionStatus,
        startedAt: (out.startDate ?? new Date(0)).toISOString(),
        ...(out.stopDate && { stoppedAt: out.stopDate.toISOString() }),
        ...(out.error && { error: out.error }),
        ...(out.cause && { cause: out.cause }),
      };
    } catch (e) {
      if (errorName(e) === "ExecutionDoesNotExist") throw notFound(`execution '${executionArn}' does not exist`);
      throw e;
    }
  }

  async history(executionArn: string): Promise<HistoryEvent[]> {
    const events: HistoryEvent[] = [];
    let nextToken: string | undefined;
    do {
      const out = await this.client
        .send(new GetExecutionHistoryCommand({ executionArn, maxResults: 1000, nextToken, includeExecutionData: false }))
        .catch((e) => {
          throw errorName(e) === "ExecutionDoesNotExist" ? notFound(`execution '${executionArn}' does not exist`) : e;
        });
      for (const ev of out.events ?? []) events.push(toEvent(ev));
      nextToken = out.nextToken;
    } while (nextToken);
    return events;
  }
}

/** Keeps state names, errors and causes; drops every input and output. */
function toEvent(ev: SfnHistoryEvent): HistoryEvent {
  const out: HistoryEvent = { id: ev.id ?? 0, type: ev.type ?? "Unknown", timestamp: (ev.timestamp ?? new Date(0)).toISOString() };
  const stateName = ev.stateEnteredEventDetails?.name ?? ev.stateExitedEventDetails?.name;
  if (stateName) out.stateName = stateName;
  for (const [key, details] of Object.entries(ev)) {
    if (!key.endsWith("EventDetails") || !details || typeof details !== "object") continue;
    const { error, cause } = details as { error?: unknown; cause?: unknown };
    if (typeof error === "string" && !out.error) out.error = error;
    if (typeof cause === "string" && !out.cause) out.cause = cause;
  }
  return out;
}
