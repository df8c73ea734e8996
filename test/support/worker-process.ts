import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, inject } from 'vitest';
import { projectRoot } from '../../lib/config.js';
import { apiAndWorkflows, endSessionsAndStop, useTestStack, type TestStack } from './harness.js';

export interface WorkerProcess {
  pid: number;
  /** Everything the process printed, for the failure message of a test that depends on it. */
  output(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Sends a signal without waiting for the exit. */
  signal(signal: NodeJS.Signals): void;
  /** Resolves when the process has printed `text` (within `ms`). */
  printed(text: string, ms: number): Promise<void>;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  /** Stops it at once, letting its clients go (SIGINT; SIGTERM would drain them: lib/handover.ts). */
  stop(): Promise<void>;
}

/** The environment of a host process (ESSH_WORKER_ROLES=host) on the stack `local`, with an id of its own that starts with `idPrefix`. */
export function hostProcessEnv(idPrefix: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: `${idPrefix}-${randomBytes(3).toString('hex')}`, ...extra };
}

/**
 * `server/worker-main.ts` as a separate process, on the test stack's namespace and database file. It runs
 * under `node --import tsx` rather than `npx tsx` so that the pid is the worker itself: a SIGKILL
 * sent to it kills the worker, not a launcher that would leave the worker running.
 */
export async function startWorkerProcess(
  stack: TestStack, env: Record<string, string>,
  opts: {
    /** What counts as started: by default the ready line; an upgrade's successor prints another first. */
    readyWhen?: string;
    /** Node's arguments: by default the sources' server/worker-main.ts through tsx; the production build's server.js, say. */
    args?: string[];
  } = {},
): Promise<WorkerProcess> {
  const readyWhen = opts.readyWhen ?? 'essh worker ready';
  const child: ChildProcess = spawn(process.execPath, opts.args ?? ['--import', 'tsx', 'server/worker-main.ts'], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: stack.config.temporal.address!,
      TEMPORAL_NAMESPACE: stack.namespace,
      DATABASE_URL: stack.config.databaseUrl,
      ESSH_DATA_DIR: stack.dataDir,
      ESSH_STOP_GRACE_S: String(stack.config.session.stopGraceS),
      ESSH_RECONCILE_INTERVAL_S: String(stack.config.reconcileIntervalS),
      // A host process runs the portal of its stacks: on a port of its own, heartbeating as the tests' sessions expect.
      ESSH_SSH_PORT: '0',
      // The tests' drain receivers listen on loopback.
      ESSH_DRAINS_ALLOW_PRIVATE: '1',
      ESSH_METRICS_PORT: '0',
      ESSH_HEARTBEAT_TIMEOUT_S: String(stack.config.session.heartbeatTimeoutS),
      ESSH_PORTAL_HEARTBEAT_S: String(stack.config.ssh.heartbeatIntervalS),
      ESSH_LOG_LEVEL: 'warn',
      // The run's prebuilt bundle: a restarted worker is back in a second or two, not after bundling.
      ESSH_WORKFLOW_BUNDLE: inject('workflowBundlePath'),
      ...env,
    },
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const printedWaiters = new Set<() => void>();
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString('utf8');
      for (const w of printedWaiters) w();
      if (out.includes(readyWhen)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => reject(new Error(`the worker process exited (${code ?? signal}) before it was ready:\n${out}`)));
  });
  ready.catch(() => undefined); // its failure is reported through the race below
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the worker process was not ready within 90 s:\n${out}`)), 90_000);
  });
  const kill = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await exited;
  };
  const handle: WorkerProcess = {
    pid: child.pid!,
    output: () => out,
    kill,
    exited,
    signal: (signal) => void child.kill(signal),
    printed: (text, ms) => new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!out.includes(text)) return;
        printedWaiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        printedWaiters.delete(check);
        reject(new Error(`the worker process did not print ${JSON.stringify(text)} within ${ms} ms:\n${out.slice(-3000)}`));
      }, ms);
      printedWaiters.add(check);
      check();
    }),
    async stop() {
      const forced = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await kill('SIGINT');
      clearTimeout(forced);
    },
  };
  try {
    await Promise.race([ready, timeout]);
  } catch (err) {
    await kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return handle;
}

/** A file's stack whose sessions run on a host process of its own, which its tests may kill and start again. */
export interface StackWithHostProcess {
  stack: TestStack;
  /** The host process last started. */
  host: WorkerProcess | undefined;
  /** Its environment, kept for a restart: the same host id and data dir. */
  hostEnv: Record<string, string>;
  /** Starts the host process again with the same environment (after the test killed it). */
  restartHost(): Promise<WorkerProcess>;
}

/**
 * The API and the session workflows in this process (useTestStack, `env` added to its settings), the
 * host (host worker, portal, agent) in a process of its own (hostProcessEnv(idPrefix, hostExtra())),
 * started before the file's own hooks; after them its sessions are ended and it is stopped.
 */
export function useStackWithHostProcess(opts: {
  idPrefix: string;
  env: Record<string, string>;
  hostExtra?: () => Promise<Record<string, string>>;
}): StackWithHostProcess {
  const stack = useTestStack({ parts: apiAndWorkflows(), env: opts.env }, { endSessions: false });
  const hosted: StackWithHostProcess = {
    stack,
    host: undefined,
    hostEnv: {},
    restartHost: async () => (hosted.host = await startWorkerProcess(stack, hosted.hostEnv)),
  };
  beforeAll(async () => {
    hosted.hostEnv = hostProcessEnv(opts.idPrefix, await opts.hostExtra?.());
    await hosted.restartHost();
  }, 180_000);
  afterAll(() => endSessionsAndStop(stack, [hosted.host]), 120_000);
  return hosted;
}
