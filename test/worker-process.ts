import { spawn, type ChildProcess } from 'node:child_process';
import { inject } from 'vitest';
import { projectRoot } from '../lib/config.js';
import type { TestStack } from './harness.js';

export interface WorkerProcess {
  pid: number;
  /** Everything the process printed, for the failure message of a test that depends on it. */
  output(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `worker/main.ts` as a separate process, on the test stack's namespace and database file. It runs
 * under `node --import tsx` rather than `npx tsx` so that the pid is the worker itself: a SIGKILL
 * sent to it kills the worker, not a launcher that would leave the worker running.
 */
export async function startWorkerProcess(stack: TestStack, env: Record<string, string>): Promise<WorkerProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
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
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString('utf8');
      if (out.includes('essh worker ready')) resolve();
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
    async stop() {
      const forced = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await kill('SIGTERM');
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
