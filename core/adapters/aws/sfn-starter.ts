import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  StartExecutionCommand,
  type DescribeExecutionCommandOutput,
  type HistoryEvent as SfnHistoryEvent,
  type SFNClient,
} from "@aws-sdk/client-sfn";
import { notFound } from "../../errors.ts";
import type { ExecutionInfo, ExecutionReader, ExecutionStatus, HistoryEvent } from "../../executions.ts";
import type { SecretRef, WorkflowStarter } from "../../rotation/model.ts";
import type { Item, Table } from "../../store/table.ts";

type Machine = "rotate" | "lease";
const errorName = (e: unknown) => (e as { name?: string })?.name;

/** arn:aws:states:r:a:stateMachine:M + name → arn:aws:states:r:a:execution:M:name */
export const executionArnOf = (stateMachineArn: string, name: string) => `${stateMachineArn.replace(":stateMachine:", ":execution:")}:${name}`;

/** The same per-secret index partition TableExecutions writes in embedded mode. */
export const secretIndexPk = (ref: SecretRef) => `EXECS#${ref.project}#${ref.config}#${ref.name}`;
const machineNameOf = (arn: string) => arn.split(":").pop() ?? "";

/** The secret (rotate) or lease an execution works on, read from the input Rotor gave it. */
function refOfInput(input: unknown): ExecutionInfo["ref"] {
  const v = (input ?? {}) as { ref?: Partial<SecretRef>; leaseId?: unknown };
  const r = v.ref;
  if (r && typeof r.project === "string" && typeof r.config === "string" && typeof r.name === "string") return { project: r.project, config: r.config, name: r.name };
  if (typeof v.leaseId === "string") return { leaseId: v.leaseId };
  return undefined;
}

function parseInput(input: string | undefined): unknown {
  try {
    return input ? JSON.parse(input) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Cloud workflows: Step Functions StartExecution; a name already used is the same execution.
 * A rotate execution is also written to the secret's execution index in the table, because
 * Step Functions can't list executions by input: that index is what `list({secret})` reads.
 */
/**
 * One row in the secret's execution index, keyed by the execution's own start time: written
 * by whoever starts it (the API) and again by its first task (covering the scheduler's starts);
 * the second write finds the row there.
 */
export async function indexRotateExecution(table: Table, ref: SecretRef, executionArn: string, startedAt: string) {
  const parts = executionArn.split(":"); // arn:aws:states:<region>:<account>:execution:<machine>:<name>
  const row: ExecutionInfo = { id: executionArn, name: parts[7] ?? executionArn, machine: parts[6] ?? "", status: "RUNNING", startedAt, ref };
  await table.putIfAbsent({ pk: secretIndexPk(ref), sk: `${startedAt}#${executionArn}`, kind: "execution-index", ...row });
}

export class StepFunctionsStarter implements WorkflowStarter {
  constructor(private readonly client: SFNClient, private readonly machines: Record<Machine, string>, private readonly table: Table) {}

  async start(machine: Machine, name: string, input: Record<string, unknown>) {
    const stateMachineArn = this.machines[machine];
    if (!stateMachineArn) throw new Error(`no state machine configured for '${machine}'`);
    let executionArn: string;
    let startDate: Date | undefined;
    try {
      const out = await this.client.send(new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }));
      executionArn = out.executionArn ?? executionArnOf(stateMachineArn, name);
      startDate = out.startDate;
    } catch (e) {
      if (errorName(e) !== "ExecutionAlreadyExists") throw e;
      executionArn = executionArnOf(stateMachineArn, name);
    }
    const ref = refOfInput(input);
    if (ref && "name" in ref) {
      // The index key carries the start date; the execution's own (not ours) keeps a repeated
      // start of the same name on the same row.
      startDate ??= (await this.client.send(new DescribeExecutionCommand({ executionArn }))).startDate;
      await indexRotateExecution(this.table, ref, executionArn, (startDate ?? new Date()).toISOString());
    }
    return { executionId: executionArn };
  }
}

/**
 * Reads executions from Step Functions: status and a history of state names, ids and errors.
 * Ids are execution ARNs. An execution's secret comes from its input (which holds a ref or a
 * lease id, never a value), so flips the scheduler starts are covered too.
 */
export class SfnExecutionReader implements ExecutionReader {
  constructor(private readonly client: SFNClient, private readonly machines: Record<Machine, string>, private readonly table: Table) {}

  async get(executionArn: string): Promise<ExecutionInfo> {
    const out = await this.describe(executionArn);
    const ref = refOfInput(parseInput(out.input));
    return { ...this.infoOf(out, executionArn), ...(ref && { ref }) };
  }

  /**
   * One secret: its index rows, newest first, with RUNNING rows refreshed from Step Functions
   * (at most `limit` calls; rows that ended are written back, so each is asked about once).
   * All: ListExecutions of both machines, merged newest first.
   */
  async list(filter: { secret?: SecretRef; limit: number }): Promise<ExecutionInfo[]> {
    if (!filter.secret) return this.listAll(filter.limit);
    const rows = await this.table.queryPrefix(secretIndexPk(filter.secret), "", { newestFirst: true, limit: filter.limit });
    return Promise.all(
      rows.map(async (row) => {
        const saved = strip(row);
        if (saved.status !== "RUNNING") return saved;
        let live: ExecutionInfo;
        try {
          live = { ...this.infoOf(await this.describe(saved.id), saved.id), ref: saved.ref };
        } catch (e) {
          // Step Functions forgets executions 90 days after they end; keep what the row says.
          if ((e as { code?: string }).code === "not_found") return saved;
          throw e;
        }
        if (live.status !== "RUNNING") await this.table.put({ pk: row.pk, sk: row.sk, kind: "execution-index", ...live });
        return live;
      }),
    );
  }

  async history(executionArn: string): Promise<HistoryEvent[]> {
    const events: HistoryEvent[] = [];
    let nextToken: string | undefined;
    do {
      const out = await this.client
        .send(new GetExecutionHistoryCommand({ executionArn, maxResults: 1000, nextToken, includeExecutionData: false }))
        .catch((e) => {
          throw missing(e) ? notFound(`execution '${executionArn}' does not exist`) : e;
        });
      for (const ev of out.events ?? []) events.push(toEvent(ev));
      nextToken = out.nextToken;
    } while (nextToken);
    return events;
  }

  private async listAll(limit: number): Promise<ExecutionInfo[]> {
    const pages = await Promise.all(
      Object.values(this.machines)
        .filter(Boolean)
        .map((stateMachineArn) => this.client.send(new ListExecutionsCommand({ stateMachineArn, maxResults: limit }))),
    );
    return pages
      .flatMap((p) => p.executions ?? [])
      .map(
        (e): ExecutionInfo => ({
          id: e.executionArn ?? "",
          name: e.name ?? "",
          machine: machineNameOf(e.stateMachineArn ?? ""),
          status: (e.status ?? "RUNNING") as ExecutionStatus,
          startedAt: (e.startDate ?? new Date(0)).toISOString(),
          ...(e.stopDate && { stoppedAt: e.stopDate.toISOString() }),
        }),
      )
      .sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0))
      .slice(0, limit);
  }

  private async describe(executionArn: string): Promise<DescribeExecutionCommandOutput> {
    try {
      return await this.client.send(new DescribeExecutionCommand({ executionArn }));
    } catch (e) {
      if (missing(e)) throw notFound(`execution '${executionArn}' does not exist`);
      throw e;
    }
  }

  private infoOf(out: DescribeExecutionCommandOutput, executionArn: string): ExecutionInfo {
    return {
      id: out.executionArn ?? executionArn,
      name: out.name ?? executionArn.split(":").pop()!,
      machine: machineNameOf(out.stateMachineArn ?? ""),
      status: (out.status ?? "RUNNING") as ExecutionStatus,
      startedAt: (out.startDate ?? new Date(0)).toISOString(),
      ...(out.stopDate && { stoppedAt: out.stopDate.toISOString() }),
      ...(out.error && { error: out.error }),
      ...(out.cause && { cause: out.cause }),
    };
  }
}

/** An id that is not an execution ARN is as unknown as an ARN Step Functions never saw. */
const missing = (e: unknown) => errorName(e) === "ExecutionDoesNotExist" || errorName(e) === "InvalidArn";

function strip(item: Item): ExecutionInfo {
  const { pk: _pk, sk: _sk, kind: _kind, ...rest } = item;
  return rest as unknown as ExecutionInfo;
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

/** Whether the execution of this name on this machine is running; one that doesn't exist is not. */
export async function executionIsRunning(client: SFNClient, stateMachineArn: string, name: string): Promise<boolean> {
  try {
    const out = await client.send(new DescribeExecutionCommand({ executionArn: executionArnOf(stateMachineArn, name) }));
    return out.status === "RUNNING";
  } catch (e) {
    if (missing(e)) return false;
    throw e;
  }
}
