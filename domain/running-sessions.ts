import type { Client } from '@temporalio/client';
import type { Logger } from '../lib/log.js';

/**
 * The ids of the session workflows Temporal's visibility lists as running, in one paginated query: the
 * reconcilers ask this once a pass instead of describing every session's workflow (at 500 sessions,
 * two reconcilers every 15 s made 67 describe calls a second, more than the heartbeats: docs/scale.md).
 * Visibility lags a little behind: a workflow missing from the set (just started, or just closed) is
 * still described one by one, so the set only saves calls and never decides anything alone. Empty if
 * the query fails (a server without advanced visibility): then every workflow is described, as before.
 */
export async function runningSessionWorkflows(client: Client, log: Pick<Logger, 'debug'>): Promise<Set<string>> {
  const ids = new Set<string>();
  try {
    for await (const w of client.workflow.list({ query: `WorkflowType = 'sessionWorkflow' AND ExecutionStatus = 'Running'`, pageSize: 1000 })) {
      ids.add(w.workflowId);
    }
  } catch (err) {
    log.debug({ err: (err as Error).message }, 'listing running session workflows failed; describing each');
    ids.clear();
  }
  return ids;
}
