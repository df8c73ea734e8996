// The process that runs essh's roles: server/main.ts (`--role`/ESSH_ROLES) and server/worker-main.ts
// (ESSH_WORKER_ROLES, its older names) both start here.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { Config } from '../lib/config.js';
import { createLogger } from '../lib/log.js';
import { startRuntime, type RuntimeParts } from './runtime.js';
import type { Role } from './roles.js';

/**
 * The workflow bundle this process's worker runs: ESSH_WORKFLOW_BUNDLE, else the one the production
 * build wrote beside its entry (server/build.ts), else none (the worker bundles the sources at start).
 */
function workflowBundle(): WorkflowBundleWithSourceMap | undefined {
  const beside = fileURLToPath(new URL('./workflow-bundle.js', import.meta.url));
  const file = process.env.ESSH_WORKFLOW_BUNDLE || (existsSync(beside) ? beside : undefined);
  return file ? { code: readFileSync(file, 'utf8'), sourceMap: '' } : undefined;
}

/** What startRuntime runs for these roles. No role seeds anything: that is `npm start`'s alone. */
export function runtimePartsFor(roles: Role[], config: Config): RuntimeParts {
  const host = roles.includes('host');
  return {
    searchAttributes: true,
    api: roles.includes('api'),
    worker: roles.includes('worker'),
    workflowBundle: roles.includes('worker') ? workflowBundle() : undefined,
    hostStacks: host ? config.hostStacks : [],
    // A session's program runs and is journaled on its host: each host runs the portal for its stacks.
    portal: host,
  };
}

/**
 * Starts the roles and serves until a signal. Prints `<name> ready` (and the API's address, which
 * may be a port picked at start) once everything listens: what the tests and a supervisor wait for.
 */
export async function serveRoles(name: string, roles: Role[], config: Config) {
  const log = createLogger(config.logLevel);
  const runtime = await startRuntime(config, runtimePartsFor(roles, config), log).catch((err: Error) => {
    // A sentence for the operator (the search attribute commands, a port taken…), not a stack trace.
    process.stderr.write(`${name}: could not start: ${err.message}\n`);
    process.exit(1);
  });
  log.info({ roles, stacks: roles.includes('host') ? config.hostStacks : [], api: runtime.apiUrl, metrics: runtime.metricsUrl }, `${name} started`);
  process.stdout.write(`${name} ready${runtime.apiUrl ? ` (API ${runtime.apiUrl})` : ''}\n`);
  // SIGINT (Ctrl-C, retiring a host): stop now, letting every client go (their sessions end).
  // SIGTERM (a deploy: the new process has started beside this one): hand over (lib/handover.ts):
  // stop taking work, keep serving the clients attached until the last leaves or ESSH_UPGRADE_DRAIN_S
  // passes; then exit without letting them go, so that the successor's reattach window keeps their
  // sessions while they come back (what a crash would leave). A second SIGTERM is that deadline now.
  // A process without the host role has no clients to keep: its hand-over is a stop.
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await runtime.stop();
    process.exit(0);
  };
  const handOver = async () => {
    if (stopping) {
      log.warn('SIGTERM again while draining: exiting now; the clients still attached reattach through the successor');
      process.exit(0);
    }
    stopping = true;
    process.stdout.write(`${name} handing over\n`);
    log.info({ drain_s: config.upgrade.drainS }, 'SIGTERM: handing over to the next host process; serving the clients attached until they leave');
    if (await runtime.handOver()) {
      log.info('handed over: the last client left');
      process.exit(0);
    }
    log.warn({ drain_s: config.upgrade.drainS }, 'drain deadline passed with clients attached: exiting; they reattach through the successor');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void handOver());
}
