// A standalone worker process: the main worker and/or the host workers of ESSH_HOST_STACKS.
// Used to scale out (one per Docker host) and by the tests that kill a worker mid-session.
import { readFileSync } from 'node:fs';
import { loadConfig } from '../lib/config.js';
import { createLogger } from '../lib/log.js';
import { startRuntime } from '../stack/runtime.js';

const config = loadConfig();
const log = createLogger(config.logLevel);
const roles = (process.env.ESSH_WORKER_ROLES ?? 'main,host').split(',');
// A workflow bundle built ahead (bundleWorkflowCode) saves the seconds of bundling at every start:
// what lets a replaced worker pick its sessions up again quickly.
const bundlePath = process.env.ESSH_WORKFLOW_BUNDLE;
const runtime = await startRuntime(
  config,
  {
    searchAttributes: true,
    worker: roles.includes('main'),
    hostStacks: roles.includes('host') ? config.hostStacks : [],
    // A session's program runs and is journaled on its host: each host runs the portal for its stacks.
    portal: roles.includes('host'),
    workflowBundle: bundlePath ? { code: readFileSync(bundlePath, 'utf8'), sourceMap: '' } : undefined,
  },
  log,
).catch((err: Error) => {
  // A sentence for the operator (the search attribute commands, a port taken…), not a stack trace.
  process.stderr.write(`essh worker: could not start: ${err.message}\n`);
  process.exit(1);
});
log.info({ roles, stacks: config.hostStacks, metrics: runtime.metricsUrl }, 'worker started');
process.stdout.write('essh worker ready\n');
// SIGINT (Ctrl-C, retiring a host): stop now, letting every client go (their sessions end).
// SIGTERM (a deploy: the new process has started beside this one): hand over (host/handover.ts):
// stop taking work, keep serving the clients attached until the last leaves or ESSH_UPGRADE_DRAIN_S
// passes; then exit without letting them go, so that the successor's reattach window keeps their
// sessions while they come back (what a crash would leave). A second SIGTERM is that deadline now.
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
  process.stdout.write('essh worker handing over\n');
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
