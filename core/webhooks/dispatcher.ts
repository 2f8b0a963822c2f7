import type { Deps } from "../context.ts";
import type { RotorEvent } from "../events.ts";
import { attemptDelivery, backoffMs, defaultDeliveryPolicy, type DeliveryPolicy, type DeliveryTarget } from "./deliver.ts";
import { matchingWebhooks } from "./model.ts";

export interface DispatcherOptions {
  policy?: DeliveryPolicy;
  /** Deliveries in flight at once; the rest wait in the queue. */
  concurrency?: number;
  /** Jobs waiting beyond this are dropped (and logged) rather than growing memory without end. */
  maxQueued?: number;
  log?: (line: string) => void;
}

type Job = { kind: "fanout"; event: RotorEvent } | { kind: "attempt"; target: DeliveryTarget; event: RotorEvent; attempt: number };

/**
 * Embedded webhook delivery off the local bus. `enqueue` returns at once, so the publisher
 * (an API request, a rotation step) never waits for a receiver; a retry waits on a timer,
 * not in a delivery slot, so one dead receiver cannot starve the others. The queue lives in
 * memory: deliveries pending when the process stops are not resumed (the cloud delivers
 * through EventBridge instead).
 */
export class WebhookDispatcher {
  private readonly queue: Job[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  private readonly stopper = new AbortController();
  private readonly policy: DeliveryPolicy;
  private readonly concurrency: number;
  private readonly maxQueued: number;
  private readonly log: (line: string) => void;

  constructor(private readonly deps: Deps, opts: DispatcherOptions = {}) {
    this.policy = opts.policy ?? defaultDeliveryPolicy;
    this.concurrency = opts.concurrency ?? 8;
    this.maxQueued = opts.maxQueued ?? 10_000;
    this.log = opts.log ?? ((line) => console.error(line));
  }

  /** The bus subscriber: never awaits delivery. */
  readonly handle = (event: RotorEvent): void => {
    if (event.project) this.enqueue({ kind: "fanout", event });
  };

  private enqueue(job: Job) {
    if (this.stopper.signal.aborted) return;
    if (this.queue.length >= this.maxQueued) {
      this.log(`webhooks: queue full, dropped ${job.kind === "fanout" ? "event" : "delivery attempt"} ${job.event.type} ${job.event.id}`);
      return;
    }
    this.queue.push(job);
    this.pump();
  }

  private pump() {
    while (this.running.size < this.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      const p: Promise<void> = this.run(job)
        .catch((e) => this.log(`webhooks: ${job.event.type} ${job.event.id}: ${(e as Error).message}`))
        .finally(() => {
          this.running.delete(p);
          this.pump();
        });
      this.running.add(p);
    }
  }

  private async run(job: Job) {
    if (job.kind === "fanout") {
      for (const target of await matchingWebhooks(this.deps, job.event)) this.enqueue({ kind: "attempt", target, event: job.event, attempt: 1 });
      return;
    }
    const result = await attemptDelivery(this.deps, job.target, job.event, job.attempt, this.policy, this.stopper.signal);
    if (result.status !== "failed" || this.stopper.signal.aborted) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.enqueue({ ...job, attempt: job.attempt + 1 });
    }, backoffMs(this.policy, job.attempt + 1));
    timer.unref();
    this.timers.add(timer);
  }

  /** True when nothing is queued, running or waiting to retry. */
  get idle(): boolean {
    return this.queue.length === 0 && this.running.size === 0 && this.timers.size === 0;
  }

  /** Aborts deliveries in flight, drops the queue and pending retries, and waits for the in-flight ones to settle. */
  async stop(): Promise<void> {
    this.stopper.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.queue.length = 0;
    await Promise.allSettled([...this.running]);
  }
}
