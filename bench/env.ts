import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import Docker from 'dockerode';
import { loadConfig, toolPath } from '../lib/config.js';
import { createLogger } from '../lib/log.js';
import { routeTemporalLogs } from '../lib/temporal.js';
import type { Principal } from '../services/auth.js';
import { DEMO_IMAGE } from '../stack/seed.js';
import { startRuntime } from '../stack/runtime.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../workflows/definitions.js';
import type { BenchContext } from './types.js';

/**
 * A whole essh stack for the benchmarks, as `npm start` runs it but on throw-away state: a Temporal
 * dev server (in memory, random port), a temp data dir with its SQLite database, the API on a random
 * port, the main and `local` host workers, on the local Docker engine.
 */
export async function startBenchEnv(): Promise<BenchContext & { stop(): Promise<void> }> {
  const log = createLogger('warn');
  // Before the test server starts the SDK runtime, so that the SDK's own lines follow our level.
  routeTemporalLogs(log);
  const temporal = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: toolPath('temporal') },
      searchAttributes: SEARCH_ATTRIBUTE_KEYS,
      extraArgs: ['--log-level', 'error'],
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
      ESSH_STOP_GRACE_S: '2',
      ESSH_LOG_LEVEL: 'warn',
      // The per-token cap on creates guards against runaway clients; the benchmarks create far more than
      // 60 a minute on purpose. A high cap (not 0) keeps the limiter on the measured path.
      ESSH_SESSION_CREATE_RATE: '1000000',
      ESSH_SSH_HOST: '127.0.0.1',
    });
    const runtime = await startRuntime(config, { api: true, worker: true, portal: true, hostStacks: ['local'] }, log);
    stopAll.unshift(() => runtime.stop());

    const operator: Principal = { id: 0, name: 'Benchmark', email: 'bench@example.com', role: 'operator', accountIds: [] };
    await runtime.admin.createStack(operator, { name: 'local' });
    return {
      runtime,
      apiUrl: runtime.apiUrl!,
      docker: new Docker(),
      progress: (line) => process.stderr.write(`bench: ${line}\n`),
      async createTenant(opts = {}) {
        const suffix = randomBytes(3).toString('hex');
        const account = `bench-${suffix}`;
        const app = `bench-app-${suffix}`;
        await runtime.admin.createAccount(operator, { handle: account, plan: 'enterprise', max_concurrent_sessions: opts.maxConcurrentSessions });
        await runtime.admin.createApp(operator, {
          handle: app, account, stack: 'local', image: opts.image ?? DEMO_IMAGE, env: { APP_ENV: 'bench' }, working_dir: '/app',
        });
        const user = await runtime.admin.createUser(operator, { name: `Bench ${suffix}`, email: `bench-${suffix}@example.com`, role: 'member', accounts: [account] });
        return { account, app, token: user.token };
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
