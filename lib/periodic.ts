import type { Logger } from 'pino';

/**
 * A pass that runs every `intervalS` and on demand, never two at once (a call during a pass gets that
 * pass); a failed pass is logged and the next one tries again. `stop()` waits for the pass in progress.
 */
export class PeriodicPass<T> {
  private timer?: NodeJS.Timeout;
  private running?: Promise<T | undefined>;
  /** When a pass last finished without failing (epoch ms); undefined before the first. */
  lastSuccessAt?: number;

  constructor(private readonly pass: () => Promise<T>, private readonly opts: { intervalS: number; log: Logger; what: string }) {}

  start(): void {
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalS * 1000);
    this.timer.unref();
  }

  runOnce(): Promise<T | undefined> {
    this.running ??= this.pass()
      .then((v) => {
        this.lastSuccessAt = Date.now();
        return v;
      })
      .catch((err) => {
        this.opts.log.warn({ err }, `${this.opts.what} failed`);
        return undefined;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }
}
