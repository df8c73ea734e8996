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
const stop = async () => {
  await runtime.stop();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
