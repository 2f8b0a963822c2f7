import type { Deps } from "./context.ts";
import { notFound } from "./errors.ts";
import type { SecretRef } from "./rotation/model.ts";

/**
 * Execution records. In embedded mode the local Step Functions runner writes them from
 * aws-local-stepfunctions' event log; they hold state names, ids and error codes — the
 * workflows never carry a secret value, and task errors are scrubbed before they get here.
 */
export type ExecutionStatus = "RUNNING" | "SUCCEEDED" | "FAILED" | "ABORTED" | "TIMED_OUT";

export interface ExecutionInfo {
  id: string;
  name: string;
  machine: string;
  status: ExecutionStatus;
  startedAt: string;
  stoppedAt?: string;
  ref?: SecretRef | { leaseId: string };
  error?: string;
  cause?: string;
}

export interface HistoryEvent {
  id: number;
  type: string;
  timestamp: string;
  stateName?: string;
  error?: string;
  cause?: string;
  attempt?: number;
  output?: unknown;
}

/** Reads executions: the table in embedded mode, Step Functions itself in the cloud. */
export interface ExecutionReader {
  get(id: string): Promise<ExecutionInfo>;
  list(filter: { secret?: SecretRef; limit: number }): Promise<ExecutionInfo[]>;
  history(id: string): Promise<HistoryEvent[]>;
}

const metaKey = (id: string) => ({ pk: `EXEC#${id}`, sk: "META" });
const listPk = (ref?: ExecutionInfo["ref"]) => (ref && "name" in ref ? `EXECS#${ref.project}#${ref.config}#${ref.name}` : "EXECS#OTHER");

export class TableExecutions implements ExecutionReader {
  constructor(private readonly deps: Pick<Deps, "table">) {}

  async save(info: ExecutionInfo) {
    const { table } = this.deps;
    await table.put({ ...metaKey(info.id), kind: "execution", ...info });
    await table.put({ pk: listPk(info.ref), sk: `${info.startedAt}#${info.id}`, kind: "execution-index", ...info });
    await table.put({ pk: "EXECS#ALL", sk: `${info.startedAt}#${info.id}`, kind: "execution-index", ...info });
  }

  async appendEvent(executionId: string, event: HistoryEvent) {
    await this.deps.table.put({ pk: `EXEC#${executionId}`, sk: `EV#${String(event.id).padStart(6, "0")}`, kind: "execution-event", ...event });
  }

  async find(id: string): Promise<ExecutionInfo | undefined> {
    const item = await this.deps.table.get(metaKey(id).pk, metaKey(id).sk);
    return item ? strip<ExecutionInfo>(item) : undefined;
  }

  async get(id: string) {
    const found = await this.find(id);
    if (!found) throw notFound(`execution '${id}' does not exist`);
    return found;
  }

  async list(filter: { secret?: SecretRef; limit: number }) {
    const items = await this.deps.table.queryPrefix(filter.secret ? listPk(filter.secret) : "EXECS#ALL", "", { newestFirst: true, limit: filter.limit });
    return items.map((i) => strip<ExecutionInfo>(i));
  }

  async history(id: string) {
    await this.get(id);
    return (await this.deps.table.queryPrefix(`EXEC#${id}`, "EV#")).map((i) => strip<HistoryEvent>(i));
  }
}

function strip<T>(item: Record<string, unknown>): T {
  const { pk: _pk, sk: _sk, kind: _kind, ...rest } = item;
  return rest as T;
}
