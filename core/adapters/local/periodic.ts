/**
 * Embedded mode's background jobs (the rotation poller, the lease reconciler) extend this: a
 * `pass` every `intervalMs` and one at start. A pass still running turns the next tick into a
 * no-op, and a failing pass is logged and retried on the next tick, never thrown into the timer.
 */
export abstract class Periodic {
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(private readonly name: string, private readonly intervalMs: number) {}

  /** One unit of the job's work; returns how much it did. */
  protected abstract pass(): Promise<number>;

  start() {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  stop() {
    clearInterval(this.timer);
  }

  /** One pass; returns what it did (0 when skipped or failed). */
  async tick(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      return await this.pass();
    } catch (e) {
      console.error(`${this.name}: ${(e as Error).message}`);
      return 0;
    } finally {
      this.running = false;
    }
  }
}
