import { fileURLToPath } from 'node:url';
import { Worker, type NativeConnection, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createDbActivities } from '../activities/db.js';
import { createHostActivities, type HostActivityDeps } from '../activities/host.js';
import { createLegacyHostActivities, createLegacyMainActivities } from '../activities/legacy.js';
import type { Db } from '../lib/db.js';
import { TASK_QUEUE, hostTaskQueue } from '../workflows/definitions.js';

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
 * A stack host's worker: the container activities, on the stack's own task queue, so that each stack is
 * served by the machine whose Docker engine runs its containers.
 */
export function createHostWorker(opts: { connection: NativeConnection; namespace: string; stack: string; host: HostActivityDeps }) {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: hostTaskQueue(opts.stack),
    activities: {
      ...createHostActivities(opts.host),
      ...createLegacyHostActivities({ docker: opts.host.docker, installation: opts.host.installation.id }),
    },
  });
}
