import type { Db, DbEngine } from '../lib/db.js';
import type { CaptureAgent } from './capture.js';
import { appendEvents } from './events.js';

export interface SessionEndedEvent {
  operationId: number;
  endReason: string;
  endMessage: string | null;
  endedBy: string | null;
  exitCode: number | null;
  endedAt: string;
}

/** Lifecycle events for the drains; on the main task queue, next to the database. */
export function createDrainActivities(deps: { db: Db; engine: DbEngine }) {
  return {
    /** Appends the "session ended" event once; a retry after a crash finds it and does nothing. */
    async recordSessionEnded(e: SessionEndedEvent): Promise<void> {
      const { db, engine } = deps;
      const op = await db.selectFrom('operations').select(['account_id', 'created_at', 'container_id'])
        .where('id', '=', e.operationId).executeTakeFirst();
      if (!op) return;
      const already = await db.selectFrom('session_events').select('id')
        .where('operation_id', '=', e.operationId).where('kind', '=', 'session_ended').executeTakeFirst();
      if (already) return;
      const stream = await db.selectFrom('session_streams').select('bytes_captured').where('operation_id', '=', e.operationId).executeTakeFirst();
      const durationS = Math.round((Date.parse(e.endedAt) - Date.parse(op.created_at)) / 100) / 10;
      await appendEvents(db, engine, { operationId: e.operationId, accountId: Number(op.account_id) }, [{
        kind: 'session_ended', time: e.endedAt, byteOffset: Number(stream?.bytes_captured ?? 0), containerId: op.container_id,
        data: JSON.stringify({
          end_reason: e.endReason, end_message: e.endMessage, ended_by: e.endedBy, exit_code: e.exitCode, duration_s: durationS,
        }),
      }]);
    },
  };
}

/** On the stack's host task queue: only the host that captures a container's output knows when it has all of it. */
export function createCaptureActivities(agent: CaptureAgent | undefined) {
  return {
    async awaitCaptureEnd(req: { operationId: number; timeoutMs: number }): Promise<{ complete: boolean }> {
      return { complete: agent ? await agent.waitForCaptureEnd(req.operationId, req.timeoutMs) : true };
    },
  };
}

export type DrainActivities = ReturnType<typeof createDrainActivities>;
export type CaptureActivities = ReturnType<typeof createCaptureActivities>;
