import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode } from '@temporalio/worker';
import Docker from 'dockerode';
import { removeInstallationFromEngine } from '../host/containers.js';
import { loadConfig, projectRoot, toolPath } from '../lib/config.js';
import { imageRepository } from '../domain/grants.js';
import { createLogger } from '../lib/log.js';
import { routeTemporalLogs } from '../lib/temporal.js';
import type { Principal } from '../services/auth.js';
import { DEMO_IMAGE } from '../server/seed.js';
import { startRuntime } from '../server/runtime.js';
import { SERVER_DYNAMIC_CONFIG } from '../server/temporal-dev.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../shapes/session-workflow.js';
import { workflowsPath } from '../worker/workers.js';
import type { BenchContext, WorkerProcess } from './types.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';

/**
 * A whole essh stack for the benchmarks, as `npm start` runs it but on throw-away state: a Temporal
 * dev server (in memory, random port), a temp data dir with its SQLite database, the API on a random
 * port, the main and `local` host workers, on the local Docker engine.
 */
export async function startBenchEnv(): Promise<BenchContext & { stop(): Promise<void> }> {
  const log = createLogger((process.env.ESSH_BENCH_LOG_LEVEL as 'info' | undefined) ?? 'warn');
  // Before the test server starts the SDK runtime, so that the SDK's own lines follow our level.
  routeTemporalLogs(log);
  const temporal = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: toolPath('temporal') },
      searchAttributes: SEARCH_ATTRIBUTE_KEYS,
      extraArgs: [...SERVER_DYNAMIC_CONFIG, '--log-level', 'error'],
    },
  });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'essh-bench-'));
  const stopAll: (() => Promise<unknown>)[] = [() => temporal.teardown(), () => rm(dataDir, { recursive: true, force: true })];
  const stop = async () => {
    for (const s of stopAll.splice(0)) await s().catch((err) => console.error('bench cleanup:', err));
  };
  try {
    const config = loadConfig({
      ...process.env,
      ESSH_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: temporal.connection.options.address,
      TEMPORAL_NAMESPACE: 'default',
      ESSH_API_PORT: '0',
      ESSH_SSH_PORT: '0',
      ESSH_METRICS_PORT: '0',
      ESSH_STOP_GRACE_S: '2',
      ESSH_LOG_LEVEL: 'warn',
      // The per-token cap on creates guards against runaway clients; the benchmarks create far more than
      // 60 a minute on purpose. A high cap (not 0) keeps the limiter on the measured path.
      ESSH_SESSION_CREATE_RATE: '1000000',
      ESSH_SSH_HOST: '127.0.0.1',
      // The drain benchmarks' receivers listen on loopback.
      ESSH_DRAINS_ALLOW_PRIVATE: '1',
    });
    // ESSH_BENCH_SPLIT_HOST=1: the `local` host worker (provisioning, host agent, its portal, journals)
    // runs in its own process (server/worker-main.ts), as in a scaled-out deployment, which a benchmark may
    // kill and start again (`restartHost`): every client of its portal loses its connection.
    const split = process.env.ESSH_BENCH_SPLIT_HOST === '1';
    // ESSH_BENCH_SPLIT_MAIN=1: the main worker (the session workflows) runs in a process of its own, which
    // a benchmark may kill and start again (`restartMainWorker`) while the portal here keeps its clients.
    const splitMain = process.env.ESSH_BENCH_SPLIT_MAIN === '1';
    if (split && splitMain) throw new Error('ESSH_BENCH_SPLIT_HOST and ESSH_BENCH_SPLIT_MAIN go one at a time');
    const runtime = await startRuntime(config, { api: true, worker: !splitMain, portal: true, hostStacks: split ? [] : ['local'] }, log);
    // After the runtime and its child processes stop: what the benchmark's installation left on the engine
    // (sessions of a module that failed midway, the warm pool, its network).
    stopAll.unshift(() => removeInstallationFromEngine(new Docker(), runtime.instanceId));
    stopAll.unshift(() => runtime.stop());
    const childEnv = {
      TEMPORAL_ADDRESS: temporal.connection.options.address, TEMPORAL_NAMESPACE: 'default', DATABASE_URL: config.databaseUrl,
      ESSH_DATA_DIR: dataDir, ESSH_STOP_GRACE_S: '2', ESSH_LOG_LEVEL: process.env.ESSH_BENCH_HOST_LOG_LEVEL ?? 'warn', ESSH_DRAINS_ALLOW_PRIVATE: '1', ESSH_METRICS_PORT: '0',
    };
    let restartHost: (() => Promise<void>) | undefined;
    if (split) {
      // A port of its own, kept across a restart: the `connect` blocks clients hold stay valid.
      const hostEnv = {
        ...childEnv, ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: 'bench-host',
        ESSH_SSH_HOST: '127.0.0.1', ESSH_SSH_PORT: String(await freePort()),
      };
      let host = await startWorkerProcess(hostEnv);
      stopAll.unshift(() => host.stop());
      restartHost = async () => {
        await host.kill();
        host = await startWorkerProcess(hostEnv);
      };
    }
    let restartMainWorker: (() => Promise<void>) | undefined;
    if (splitMain) {
      // Bundled once: a started-again worker is polling within a second or two, not after bundling.
      const bundle = await bundleWorkflowCode({ workflowsPath, logger: quietLogger });
      const bundlePath = path.join(dataDir, 'workflow-bundle.js');
      await writeFile(bundlePath, bundle.code);
      const mainEnv = { ...childEnv, ESSH_WORKER_ROLES: 'main', ESSH_WORKFLOW_BUNDLE: bundlePath };
      let main = await startWorkerProcess(mainEnv);
      stopAll.unshift(() => main.stop());
      restartMainWorker = async () => {
        await main.kill();
        main = await startWorkerProcess(mainEnv);
      };
    }

    const operator: Principal = { id: 0, name: 'Benchmark', email: 'bench@example.com', role: 'operator', accountIds: [] };
    await runtime.admin.stacks.create(operator, { name: 'local' });
    return {
      runtime,
      apiUrl: runtime.apiUrl!,
      docker: new Docker(),
      temporalAddress: temporal.connection.options.address,
      restartMainWorker,
      restartHost,
      progress: (line) => process.stderr.write(`bench: ${line}\n`),
      async createStack(name) {
        await runtime.admin.stacks.create(operator, { name });
      },
      async startHostProcess(env, opts = {}) {
        // Every process of a split installation needs the same key (docs/configuration.md).
        const secretsKey = config.secretsKey ?? (await readFile(path.join(dataDir, 'secrets.key'), 'utf8')).trim();
        const host = await startWorkerProcess({
          ...childEnv, ESSH_WORKER_ROLES: 'host', ESSH_SSH_HOST: '127.0.0.1', ESSH_SSH_PORT: '0', ESSH_SECRETS_KEY: secretsKey, ...env,
        }, { readyWhen: opts.readyWhen, stopSignal: 'SIGINT' });
        stopAll.unshift(() => host.stop());
        return host;
      },
      async createTenant(opts = {}) {
        const suffix = randomBytes(3).toString('hex');
        const account = `bench-${suffix}`;
        const app = `bench-app-${suffix}`;
        const image = opts.image ?? DEMO_IMAGE;
        // An account runs only the images under the prefixes an operator granted it.
        await runtime.admin.accounts.create(operator, {
          handle: account, plan: 'enterprise', max_concurrent_sessions: opts.maxConcurrentSessions, image_prefixes: [imageRepository(image)],
        });
        await runtime.admin.apps.create(operator, {
          handle: app, account, stack: opts.stack ?? 'local', image, env: { APP_ENV: 'bench' }, working_dir: '/app',
          warm_pool: opts.warmPool ?? 0,
        });
        const user = await runtime.admin.users.create(operator, { name: `Bench ${suffix}`, email: `bench-${suffix}@example.com`, role: 'member', accounts: [account] });
        return { account, app, token: user.token, userId: Number(user.id) };
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * server/worker-main.ts in its own process; resolves once it has printed `readyWhen` (by default its ready line),
 * with the functions that stop it (`stopSignal`, SIGTERM by default; a host process drains its clients
 * at SIGTERM, so the host processes of the fleet benchmarks stop at SIGINT) and kill it.
 */
async function startWorkerProcess(
  env: Record<string, string>, opts: { readyWhen?: string; stopSignal?: NodeJS.Signals } = {},
): Promise<WorkerProcess> {
  const readyWhen = opts.readyWhen ?? 'essh worker ready';
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/worker-main.ts'], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const stop = async () => {
    if (gone()) return;
    const forced = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.kill(opts.stopSignal ?? 'SIGTERM');
    await exited;
    clearTimeout(forced);
  };
  /** As a crash or an OOM kill would end it: no goodbye to the server, its sticky caches lost. */
  const kill = async () => {
    if (gone()) return;
    child.kill('SIGKILL');
    await exited;
  };
  // What it printed, for `printed` (the lines an upgrade waits for) and for the error of a failed start.
  let out = '';
  let started = false;
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    out = (out + chunk.toString('utf8')).slice(-OUTPUT_KEPT);
    // Its warnings after start-up (failed tasks, a slow provisioning) belong in the benchmark's output;
    // its log lines go to stdout.
    if (started) process.stderr.write(chunk);
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const printed = (text: string, ms: number) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (!out.includes(text)) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`the worker process did not print ${JSON.stringify(text)} within ${ms / 1000} s:\n${out.slice(-3000)}`));
    }, ms);
    waiters.add(check);
    check();
  });
  try {
    await Promise.race([
      printed(readyWhen, 90_000),
      exited.then((code) => {
        if (!started) throw new Error(`the worker process exited (${code ?? child.signalCode}) before it was ready:\n${out}`);
      }),
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  started = true;
  return { pid: child.pid!, exited, printed, signal: (s) => void child.kill(s), stop, kill };
}

const OUTPUT_KEPT = 64 * 1024;


const noop = () => undefined;
const quietLogger = { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: console.error };
