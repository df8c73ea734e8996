import type Docker from 'dockerode';
import type { Runtime } from '../server/runtime.js';

/** One line of the printed table. */
export interface BenchRow {
  benchmark: string;
  metric: string;
  value: number;
  unit: string;
  note?: string;
}

/** What every benchmark module gets: a running essh stack on its own dev server, and helpers. */
export interface BenchContext {
  runtime: Runtime;
  apiUrl: string;
  docker: Docker;
  /** The Temporal dev server's address (its process is found by its port). */
  temporalAddress: string;
  /**
   * With ESSH_BENCH_SPLIT_MAIN=1 the main worker (the session workflows) runs in a process of its own:
   * this SIGKILLs it and starts it again, as a crash and a restart would.
   */
  restartMainWorker?: () => Promise<void>;
  /**
   * With ESSH_BENCH_SPLIT_HOST=1 the `local` host (its worker, agent and SSH portal) runs in a process of
   * its own: this SIGKILLs it and starts it again on the same port, as a crash and a restart would.
   */
  restartHost?: () => Promise<void>;
  /** An account (its own plan limit), an app on stack `local` (or `stack`) and a member; returns the member's token. */
  createTenant(opts?: { maxConcurrentSessions?: number; image?: string; warmPool?: number; stack?: string }): Promise<{ account: string; app: string; token: string; userId: number }>;
  /** A stack of this installation, for the host processes a benchmark starts (`startHostProcess`). */
  createStack(name: string): Promise<void>;
  /**
   * A host process (server/worker-main.ts with ESSH_WORKER_ROLES=host) on this stack's Temporal server and
   * database, with the secrets key of this process: `env` names at least its ESSH_HOST_ID,
   * ESSH_HOST_STACKS and ESSH_DATA_DIR (its own: the `local` host of this process uses the bench's).
   * Resolves once it printed `readyWhen` (its ready line by default). It stops at SIGINT (at once,
   * letting its clients go), when the benchmark stops it or at the end of the run.
   */
  startHostProcess(env: Record<string, string>, opts?: { readyWhen?: string }): Promise<WorkerProcess>;
  /** Progress lines go to stderr; the table to stdout. */
  progress(line: string): void;
}

/** A server/worker-main.ts process a benchmark started. */
export interface WorkerProcess {
  pid: number;
  /** Resolves with its exit code once it has exited. */
  readonly exited: Promise<number | null>;
  /** Resolves once it has printed `text` (within `ms`). */
  printed(text: string, ms: number): Promise<void>;
  /** Sends a signal without waiting for the exit. */
  signal(signal: NodeJS.Signals): void;
  stop(): Promise<void>;
  /** SIGKILL, as a crash or an OOM kill would end it. */
  kill(): Promise<void>;
}

/**
 * A benchmark: run with `npm run bench` (all), or `npm run bench -- <name> …` (some). Add a module to
 * the list in bench/run.ts.
 */
export interface BenchModule {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchRow[]>;
}

/** A benchmark that needs no essh stack (the CLI's own start-up): running only such ones starts none. */
export interface StandaloneBenchModule {
  name: string;
  description: string;
  standalone: true;
  run(ctx: Pick<BenchContext, 'progress'>): Promise<BenchRow[]>;
}
