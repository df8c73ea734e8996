import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

export interface CaptureThreadOptions {
  databaseUrl: string;
  instanceId: string;
  intervalS: number;
  logLevel: string;
}

/** What the capture activities need from the capture, wherever it runs. */
export interface CaptureWaiter {
  waitForCaptureEnd(operationId: number, timeoutMs: number): Promise<boolean>;
}

type Reply = { type: 'ready' } | { type: 'waited'; id: number; complete: boolean } | { type: 'failed'; message: string };

/**
 * Runs the CaptureAgent in a worker thread of its own. Storing a session's output is heavy for bulk
 * output (about 9 s of synchronous SQLite work per 100 MB of random bytes, measured with a CPU profile),
 * and on the host worker's event loop it stalled everything that loop also serves: the portal's
 * terminals, heartbeats and activities. The thread has its own database connection and Docker client;
 * it is restarted if it dies, and a capture resumes from the committed position as after any restart.
 */
export class CaptureThread implements CaptureWaiter {
  private worker?: Worker;
  private readonly waits = new Map<number, (complete: boolean) => void>();
  private nextWait = 1;
  private stopping = false;
  private restartTimer?: NodeJS.Timeout;

  constructor(private readonly opts: CaptureThreadOptions, private readonly log: Logger) {}

  async start(): Promise<void> {
    const worker = new Worker(new URL('./capture-thread-entry.mjs', import.meta.url), { workerData: this.opts });
    this.worker = worker;
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: Reply) => {
        if (m.type === 'ready') return done(), resolve();
        if (m.type === 'failed') return done(), reject(new Error(`the capture thread could not start: ${m.message}`));
      };
      const onExit = (code: number) => (done(), reject(new Error(`the capture thread exited (${code}) while starting`)));
      const done = () => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.once('exit', onExit);
    });
    worker.on('message', (m: Reply) => {
      if (m.type !== 'waited') return;
      this.waits.get(m.id)?.(m.complete);
      this.waits.delete(m.id);
    });
    worker.on('error', (err) => this.log.error({ err }, 'the capture thread failed'));
    worker.once('exit', (code) => {
      // Whoever waits for a capture gets "not complete" rather than waiting out its timeout.
      for (const w of this.waits.values()) w(false);
      this.waits.clear();
      if (this.stopping) return;
      this.log.error({ code }, 'the capture thread stopped; starting it again in 1 s');
      this.restartSoon(1000);
    });
  }

  private restartSoon(ms: number) {
    this.restartTimer = setTimeout(() => {
      if (this.stopping) return;
      this.start().catch((err) => {
        this.log.error({ err }, 'restarting the capture thread failed; trying again in 5 s');
        this.restartSoon(5000);
      });
    }, ms);
  }

  waitForCaptureEnd(operationId: number, timeoutMs: number): Promise<boolean> {
    const worker = this.worker;
    if (!worker || this.stopping) return Promise.resolve(false);
    const id = this.nextWait++;
    return new Promise((resolve) => {
      this.waits.set(id, resolve);
      worker.postMessage({ type: 'wait', id, operationId, timeoutMs });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise<void>((r) => worker.once('exit', () => r()));
    worker.postMessage({ type: 'stop' });
    // A thread stuck in a long write still goes: what it had committed is where the next one resumes.
    const killer = setTimeout(() => void worker.terminate(), 10_000);
    await exited;
    clearTimeout(killer);
  }
}
