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

interface PendingWait {
  operationId: number;
  deadline: number;
  resolve: (complete: boolean) => void;
  timer: NodeJS.Timeout;
}

/**
 * Runs the CaptureAgent in a worker thread of its own. Storing a session's output is heavy for bulk
 * output (about 9 s of synchronous SQLite work per 100 MB of random bytes, measured with a CPU profile),
 * and on the host worker's event loop it stalled everything that loop also serves: the portal's
 * terminals, heartbeats and activities. The thread has its own database connection and Docker client;
 * it is restarted if it dies, and a capture resumes from the committed position as after any restart.
 */
export class CaptureThread implements CaptureWaiter {
  private worker?: Worker;
  /** Waits outlive the thread: one that dies is asked again by its successor (see onThreadExit). */
  private readonly waits = new Map<number, PendingWait>();
  private nextWait = 1;
  private stopping = false;
  private restartTimer?: NodeJS.Timeout;

  constructor(private readonly opts: CaptureThreadOptions, private readonly log: Logger) {}

  async start(): Promise<void> {
    const worker = new Worker(new URL('./capture-thread-entry.mjs', import.meta.url), { workerData: this.opts });
    this.worker = worker;
    // Waits that came while there was no thread (a restart in progress) go to this one; the thread
    // reads its messages once it is ready.
    for (const [id, wait] of this.waits) this.post(id, wait);
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: Reply) => {
        if (m.type === 'ready') return done(), resolve();
        if (m.type === 'failed') return done(), reject(new Error(`the capture thread could not start: ${m.message}`));
      };
      const onExit = (code: number) => {
        done();
        if (this.worker === worker) this.worker = undefined;
        reject(new Error(`the capture thread exited (${code}) while starting`));
      };
      const done = () => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.once('exit', onExit);
    });
    worker.on('message', (m: Reply) => {
      if (m.type === 'waited') this.settle(m.id, m.complete);
    });
    worker.on('error', (err) => this.log.error({ err }, 'the capture thread failed'));
    worker.once('exit', (code) => this.onThreadExit(worker, code));
  }

  private onThreadExit(worker: Worker, code: number) {
    if (this.worker === worker) this.worker = undefined;
    if (this.stopping) return;
    // Whoever waits for a capture (a teardown about to remove the container) keeps waiting: the next
    // thread picks the capture up from its committed position and reads the container's log to the
    // end. Answering "not complete" here lost the output it had not committed yet.
    this.log.error({ code }, 'the capture thread stopped; starting it again in 1 s');
    this.restartSoon(1000);
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
    if (this.stopping) return Promise.resolve(false);
    const id = this.nextWait++;
    return new Promise((resolve) => {
      const wait: PendingWait = {
        operationId, deadline: Date.now() + timeoutMs, resolve, timer: setTimeout(() => this.settle(id, false), timeoutMs),
      };
      this.waits.set(id, wait);
      this.post(id, wait);
    });
  }

  private post(id: number, wait: PendingWait) {
    this.worker?.postMessage({ type: 'wait', id, operationId: wait.operationId, timeoutMs: Math.max(0, wait.deadline - Date.now()) });
  }

  private settle(id: number, complete: boolean) {
    const wait = this.waits.get(id);
    if (!wait) return;
    this.waits.delete(id);
    clearTimeout(wait.timer);
    wait.resolve(complete);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    for (const id of [...this.waits.keys()]) this.settle(id, false);
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
