import type { Deps } from "./context.ts";
import { notFound } from "./errors.ts";
import type { Item } from "./store/table.ts";
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

const HISTORY_FLUSH_MS = 1000;
const metaKey = (id: string) => ({ pk: `EXEC#${id}`, sk: "META" });
const secretListPk = (ref: SecretRef) => `EXECS#${ref.project}#${ref.config}#${ref.name}`;

export class TableExecutions implements ExecutionReader {
  constructor(private readonly deps: Pick<Deps, "table">) {}

  /** The record and its list rows: every execution in EXECS#ALL, a flip also under its secret. */
  async save(info: ExecutionInfo) {
    const { table } = this.deps;
    const sk = `${info.startedAt}#${info.id}`;
    await Promise.all([
      table.put({ ...metaKey(info.id), kind: "execution", ...info }),
      table.put({ pk: "EXECS#ALL", sk, kind: "execution-index", ...info }),
      info.ref && "name" in info.ref ? table.put({ pk: secretListPk(info.ref), sk, kind: "execution-index", ...info }) : undefined,
    ]);
  }

  /**
   * History events are buffered and written in batches: one write per event would double a
   * flip's table traffic, and history is a record of what ran, not state a re-run needs (the
   * rotated item is). A flush timer keeps a long run's history (a lease waiting for days)
   * visible as it goes; the runner flushes when a run ends.
   */
  private readonly buffered = new Map<string, { items: Item[]; timer: NodeJS.Timeout; flushed: Promise<void>; resolve: () => void; reject: (e: unknown) => void }>();

  appendEvent(executionId: string, event: HistoryEvent): Promise<void> {
    let entry = this.buffered.get(executionId);
    if (!entry) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const flushed = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      flushed.catch(() => {}); // the runner observes failures through flush()
      const timer = setTimeout(() => void this.flush(executionId), HISTORY_FLUSH_MS);
      timer.unref();
      entry = { items: [], timer, flushed, resolve, reject };
      this.buffered.set(executionId, entry);
    }
    entry.items.push({ pk: `EXEC#${executionId}`, sk: `EV#${String(event.id).padStart(6, "0")}`, kind: "execution-event", ...event });
    return entry.flushed;
  }

  /** Batches being written, by execution: this process's readers wait for them (read your writes). */
  private readonly writing = new Map<string, Set<Promise<void>>>();

  /** Writes the buffered events of one execution now. */
  async flush(executionId: string): Promise<void> {
    const entry = this.buffered.get(executionId);
    if (!entry) return;
    this.buffered.delete(executionId);
    clearTimeout(entry.timer);
    const written = this.deps.table.batchPut(entry.items);
    const pending = this.writing.get(executionId) ?? new Set();
    const settled = written.then(() => undefined, () => undefined);
    pending.add(settled);
    this.writing.set(executionId, pending);
    try {
      await written;
      entry.resolve();
    } catch (e) {
      entry.reject(e);
      throw e;
    } finally {
      pending.delete(settled);
      if (pending.size === 0 && this.writing.get(executionId) === pending) this.writing.delete(executionId);
    }
  }

  /** Resolves once every history batch under way is written (or has failed): before a shutdown. */
  async drain(): Promise<void> {
    await Promise.all([...this.writing.values()].flatMap((set) => [...set]));
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
    const items = await this.deps.table.queryPrefix(filter.secret ? secretListPk(filter.secret) : "EXECS#ALL", "", { newestFirst: true, limit: filter.limit });
    return items.map((i) => strip<ExecutionInfo>(i));
  }

  async history(id: string) {
    await Promise.all([...(this.writing.get(id) ?? [])]);
    await this.get(id);
    return (await this.deps.table.queryPrefix(`EXEC#${id}`, "EV#")).map((i) => strip<HistoryEvent>(i));
  }
}

function strip<T>(item: Record<string, unknown>): T {
  const { pk: _pk, sk: _sk, kind: _kind, ...rest } = item;
  return rest as T;
}
