import { fileURLToPath } from 'node:url';
import { Worker, type NativeConnection, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createDbActivities } from '../activities/db.js';
import { createHostActivities, type HostActivityDeps } from '../activities/host.js';
import { createLegacyHostActivities, createLegacyMainActivities } from '../activities/legacy.js';
import type { Db } from '../lib/db.js';
import { TASK_QUEUE, hostOwnTaskQueue, hostTaskQueue } from '../shapes/session-workflow.js';

// A path, not resolved at import: the production build (server/build.ts) runs without the sources,
// from the bundle it prebuilt; only a worker given no bundle reads them.
export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

/** The main worker: session workflows and the activities that write Operation records. */
export function createMainWorker(opts: {
  connection: NativeConnection;
  namespace: string;
  db: Db;
  workflowBundle?: WorkflowBundleWithSourceMap;
}) {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: TASK_QUEUE,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath }),
    activities: { ...createDbActivities(opts.db), ...createLegacyMainActivities() },
  });
}

/**
 * A stack host's workers for one stack: the container activities on the host's own queue for the
 * stack, where placement sends the sessions it puts on this host (services/sessions.ts), and on the
 * stack's shared queue, where the sessions started before placement (no host in their input) still
 * find a worker. While such sessions live, a stack should have one host (docs/fleet.md): the shared
 * queue gives their activities to any host polling it.
 */
export function createHostWorkers(opts: { connection: NativeConnection; namespace: string; stack: string; host: HostActivityDeps }) {
  const activities = {
    ...createHostActivities(opts.host),
    ...createLegacyHostActivities({ docker: opts.host.docker, installation: opts.host.installation.id }),
  };
  return Promise.all([hostOwnTaskQueue(opts.stack, opts.host.hostId), hostTaskQueue(opts.stack)].map((taskQueue) =>
    Worker.create({ connection: opts.connection, namespace: opts.namespace, taskQueue, activities })));
}
