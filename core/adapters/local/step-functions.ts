import { readFileSync } from "node:fs";
import type { TableExecutions, HistoryEvent, ExecutionStatus } from "../../executions.ts";
import type { RotationDeps, WorkflowStarter } from "../../rotation/model.ts";

// aws-local-stepfunctions uses Promise.withResolvers, which Node 20 lacks.
if (!(Promise as { withResolvers?: unknown }).withResolvers) {
  (Promise as unknown as { withResolvers: () => unknown }).withResolvers = function withResolvers<T>() {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<T>((a, b) => {
      resolve = a;
      reject = b;
    });
    return { promise, resolve, reject };
  };
}
const { StateMachine } = await import("aws-local-stepfunctions");

export type LocalTask = (deps: RotationDeps, input: unknown) => Promise<unknown>;

export interface MachineSource {
  /** Path of the ASL file: the same file the stack deploys. */
  file: string;
  /** `${Name}` placeholder in a Task's Resource → the function that runs it. */
  tasks: Record<string, LocalTask>;
}

export interface LocalRunnerOptions {
  /** Shorten every backoff Wait state (not waits for a timestamp) and Retry pause to this many ms (tests, benchmarks). */
  waitMs?: number;
  retryMs?: number;
  /** Called around each task; throwing `SimulatedCrash` stops the execution as a process death would. */
  onTask?: (state: string, phase: "before" | "after", input: unknown) => Promise<void> | void;
}

export class SimulatedCrash extends Error {
  constructor(where: string) {
    super(`simulated crash at ${where}`);
    this.name = "SimulatedCrash";
  }
}

interface Compiled {
  machine: InstanceType<typeof StateMachine>;
  handlers: Record<string, LocalTask>;
  waitStates: string[];
  taskStates: string[];
}

/**
 * Embedded Step Functions: runs the real ASL files with aws-local-stepfunctions, mapping
 * each Task state to the function its Lambda would run, and keeps each execution's event
 * log in the table as its history. Execution names are unique per machine, as in AWS; a
 * name whose earlier run did not finish (the process died) runs again, and converges.
 */
export class LocalStepFunctions implements WorkflowStarter {
  private readonly compiled = new Map<string, Compiled>();
  private readonly running = new Map<string, { abort: () => void; done: Promise<ExecutionStatus>; refKey?: string }>();
  private readonly starting = new Map<string, Promise<{ executionId: string }>>();
  private deps?: RotationDeps;
  private stopped = false;

  constructor(
    private readonly executions: TableExecutions,
    machines: Record<string, MachineSource>,
    private readonly options: LocalRunnerOptions = {},
  ) {
    for (const [name, source] of Object.entries(machines)) this.compiled.set(name, compile(source));
  }

  attach(deps: RotationDeps) {
    this.deps = deps;
  }

  isRunning(name: string) {
    return this.running.has(name);
  }

  runningCount() {
    return this.running.size;
  }

  /** Whether a run for this secret is under way (its flip may not be recorded yet). */
  isRunningFor(ref: { project: string; config: string; name: string }) {
    const key = JSON.stringify([ref.project, ref.config, ref.name]);
    return [...this.running.values()].some((r) => r.refKey === key);
  }

  /** Resolves with the final status of a run started in this process (or the stored one). */
  async wait(executionId: string): Promise<ExecutionStatus> {
    const run = this.running.get(executionId);
    if (run) return run.done;
    return (await this.executions.get(executionId)).status;
  }

  async start(machineName: "rotate" | "lease", name: string, input: Record<string, unknown>) {
    if (this.stopped) throw new Error("the workflow runner is stopped");
    const compiled = this.compiled.get(machineName);
    if (!compiled) throw new Error(`no state machine '${machineName}'`);
    const executionId = name;
    if (this.running.has(executionId)) return { executionId };
    // Two starts of one name in the same tick would both miss `running` across the awaits
    // below and run the execution twice: the second joins the first's start instead.
    const starting = this.starting.get(executionId);
    if (starting) return starting;
    const started = this.launch(compiled, machineName, executionId, input).finally(() => this.starting.delete(executionId));
    this.starting.set(executionId, started);
    return started;
  }

  private async launch(compiled: Compiled, machineName: string, executionId: string, input: Record<string, unknown>) {
    const name = executionId;
    const previous = await this.executions.find(executionId);
    if (previous && previous.status !== "RUNNING" && previous.status !== "ABORTED") return { executionId };
    if (this.stopped) throw new Error("the workflow runner is stopped");

    // A re-run of an unfinished name is the same execution: it keeps its start time (one
    // entry in the lists) and its history goes on after the events already stored.
    const startedAt = previous?.startedAt ?? new Date().toISOString();
    const firstEvent = previous ? (await this.executions.history(executionId)).length : 0;
    const info = { id: executionId, name, machine: machineName, status: "RUNNING" as const, startedAt, ref: input.ref as never };
    await this.executions.save(info);
    const handle = { abort: () => {} };
    const done = this.run(compiled, info, input, handle, firstEvent);
    const ref = input.ref as { project?: string; config?: string; name?: string } | undefined;
    const refKey = ref?.name ? JSON.stringify([ref.project, ref.config, ref.name]) : undefined;
    this.running.set(executionId, { abort: () => handle.abort(), done, refKey });
    void done.finally(() => this.running.delete(executionId));
    return { executionId };
  }

  private async run(
    compiled: Compiled,
    info: { id: string; name: string; machine: string; startedAt: string; ref?: never },
    input: Record<string, unknown>,
    handle: { abort: () => void },
    firstEvent: number,
  ): Promise<ExecutionStatus> {
    await Promise.resolve(); // let start() register the run first
    const deps = this.deps;
    if (!deps) throw new Error("LocalStepFunctions.attach(deps) was not called");
    const onTask = this.options.onTask;
    let crashed = false;
    const handlers = Object.fromEntries(
      Object.entries(compiled.handlers).map(([state, fn]) => [
        state,
        async (stateInput: unknown) => {
          if (onTask) await guardCrash(() => onTask(state, "before", stateInput));
          const out = await fn(deps, stateInput);
          if (onTask) await guardCrash(() => onTask(state, "after", stateInput));
          return out;
        },
      ]),
    );
    const guardCrash = async (f: () => Promise<void> | void) => {
      try {
        await f();
      } catch (e) {
        if (e instanceof SimulatedCrash) {
          crashed = true;
          execution.abort();
          // A dead process never answers: the task must not fail into Retry or Catch.
          await new Promise<never>(() => {});
        }
        throw e;
      }
    };
    const execution = compiled.machine.run(input as never, {
      overrides: {
        taskResourceLocalHandlers: handlers,
        waitTimeOverrides: this.options.waitMs !== undefined ? Object.fromEntries(compiled.waitStates.map((s) => [s, this.options.waitMs!])) : undefined,
        retryIntervalOverrides: this.options.retryMs !== undefined ? Object.fromEntries(compiled.taskStates.map((s) => [s, this.options.retryMs!])) : undefined,
      },
      context: {
        Execution: {
          Id: info.id,
          Name: info.name,
          Input: input,
          StartTime: info.startedAt,
          RoleArn: "arn:aws:iam::000000000000:role/rotor-embedded",
        },
        StateMachine: { Id: `arn:aws:states:us-east-1:000000000000:stateMachine:rotor-${info.machine}`, Name: `rotor-${info.machine}` },
      },
      noThrowOnAbort: true,
    } as never);
    handle.abort = () => execution.abort();

    let seq = firstEvent;
    const logging = (async () => {
      for await (const ev of execution.eventLogs as AsyncIterable<Record<string, unknown>>) {
        void this.executions.appendEvent(info.id, toHistoryEvent(++seq, ev)); // failures surface through flush()
      }
    })();

    let status: ExecutionStatus = "SUCCEEDED";
    let error: string | undefined;
    let cause: string | undefined;
    try {
      const result = await execution.result;
      if (result === null) status = "ABORTED";
    } catch (e) {
      status = (e as Error).name === "ExecutionTimeoutError" ? "TIMED_OUT" : "FAILED";
      error = (e as { name?: string }).name === "ExecutionError" ? ((e as { cause?: { name?: string } }).cause?.name ?? "Error") : (e as Error).name;
      cause = (e as Error).message;
    }
    await logging.catch(() => undefined);
    if (crashed || this.stopped) status = "ABORTED"; // a process death: the flip stays in flight, to be re-run
    // The run is over once its status is stored; its last history batch goes in after it
    // (flush() registers the batch before returning, so history() in this process waits for
    // it; stop() drains it). Whichever lands first, a re-run converges: it skips a finished
    // name and numbers its events after those stored.
    await this.executions.save({ ...info, status, stoppedAt: new Date().toISOString(), error, cause });
    void this.executions.flush(info.id).catch((e) => console.error(`execution ${info.id}: history not saved: ${(e as Error).message}`));
    return status;
  }

  /** Stops every run (process shutdown). Their flips stay in flight and are re-run on the next start. */
  async stop() {
    this.stopped = true;
    await Promise.allSettled([...this.starting.values()]); // a start under way registers its run first
    for (const run of this.running.values()) run.abort();
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
    await this.executions.drain();
  }
}

function compile(source: MachineSource): Compiled {
  const definition = JSON.parse(readFileSync(source.file, "utf8")) as { States: Record<string, { Type: string; Resource?: string; TimestampPath?: string; Timestamp?: string }> };
  const handlers: Record<string, LocalTask> = {};
  const waitStates: string[] = [];
  const taskStates: string[] = [];
  for (const [stateName, state] of Object.entries(definition.States)) {
    // Only backoff waits are shortened: a wait for a timestamp (a lease's expiry) is real time.
    if (state.Type === "Wait" && !state.TimestampPath && !state.Timestamp) waitStates.push(stateName);
    if (state.Type !== "Task") continue;
    taskStates.push(stateName);
    const placeholder = /^\$\{(\w+)\}$/.exec(state.Resource ?? "")?.[1];
    if (!placeholder || !source.tasks[placeholder]) throw new Error(`${source.file}: task state ${stateName} has no local function for ${state.Resource}`);
    handlers[stateName] = source.tasks[placeholder];
    state.Resource = `arn:aws:lambda:us-east-1:000000000000:function:rotor-${placeholder}`;
  }
  return { machine: new StateMachine(definition as never), handlers, waitStates, taskStates };
}

function toHistoryEvent(id: number, ev: Record<string, unknown>): HistoryEvent {
  const state = ev.state as { name?: string; output?: unknown } | undefined;
  return {
    id,
    type: String(ev.type),
    timestamp: new Date(Number(ev.timestamp)).toISOString(),
    stateName: state?.name,
    error: ev.Error as string | undefined,
    cause: ev.Cause as string | undefined,
    attempt: (ev.retry as { attempt?: number } | undefined)?.attempt,
    output: ev.type === "StateExited" ? state?.output : ev.type === "ExecutionSucceeded" ? ev.output : undefined,
  };
}
