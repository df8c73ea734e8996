import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { closeOperation } from '../domain/operation-record.js';
import { PeriodicPass } from '../lib/periodic.js';
import { runningSessionWorkflows } from '../domain/running-sessions.js';
import { sessionWorkflowId, type SessionResult } from '../shapes/session-workflow.js';
import type { EndReason } from '../shapes/enumerations.js';

/**
 * Closes the Operation record of a session whose workflow closed without recording its end (for
 * example `temporal workflow terminate`), so that its plan slot is free again. The workflow records
 * its own end in every other case; this is the safety net.
 */
export class OperationsReconciler {
  private readonly passes: PeriodicPass<void>;

  constructor(private readonly deps: { db: Db; client: Client; intervalS: number; settleS?: number; log: Logger }) {
    this.passes = new PeriodicPass(() => this.pass(), { intervalS: deps.intervalS, log: deps.log, what: 'operations reconcile pass' });
  }

  start() {
    this.passes.start();
  }

  stop() {
    return this.passes.stop();
  }

  private async pass() {
    const { db, client, log } = this.deps;
    // Rows younger than this may belong to a workflow that is still being started.
    const settled = new Date(Date.now() - (this.deps.settleS ?? 30) * 1000).toISOString();
    const open = await db
      .selectFrom('operations')
      .select(['id', 'state'])
      .where('state', '!=', 'ended')
      .where('created_at', '<', settled)
      .execute();
    const listedRunning = open.length ? await runningSessionWorkflows(client, log) : new Set<string>();
    for (const op of open) {
      if (listedRunning.has(sessionWorkflowId(Number(op.id)))) continue;
      let reason: EndReason;
      let message: string;
      let exitCode: number | null = null;
      try {
        const handle = client.workflow.getHandle(sessionWorkflowId(Number(op.id)));
        const d = await handle.describe();
        if (d.status.name === 'RUNNING') continue;
        if (d.status.name === 'COMPLETED') {
          const result = (await handle.result()) as SessionResult;
          reason = result.end_reason;
          message = result.end_message ?? '';
          exitCode = result.exit_code;
        } else {
          reason = 'terminated';
          message = `the session workflow ended outside essh (${d.status.name.toLowerCase()})`;
        }
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        reason = 'provision_failed';
        message = 'the session workflow does not exist';
      }
      log.info({ operationId: Number(op.id), reason }, 'closing the record of a session whose workflow is closed');
      await closeOperation(db, Number(op.id), { reason, message, endedBy: reason === 'terminated' ? 'temporal' : null, exitCode });
    }
  }
}
