import { Context } from '@temporalio/activity';
import type Docker from 'dockerode';
import type { Db, DbEngine } from '../lib/db.js';
import { dockerStatus } from '../lib/docker.js';
import { containerName } from '../workflows/definitions.js';
import type { CaptureWaiter } from './capture-thread.js';
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
export function createCaptureActivities(deps: { agent: CaptureWaiter; docker: Docker }) {
  return {
    /**
     * Stops the session's container (if it still runs) and waits until the capture has read and committed
     * everything it printed. Called before the container is removed: removing it also removes the log
     * the capture reads from, and a capture that lags behind a fast printer would lose the rest.
     */
    async stopAndFinishCapture(req: { operationId: number; stopGraceS: number; timeoutMs: number }): Promise<{ complete: boolean }> {
      const beat = setInterval(() => Context.current().heartbeat(), 5000);
      try {
        return { complete: await stopAndFinishCapture(deps.docker, deps.agent, containerName(req.operationId), req.operationId, req.stopGraceS, req.timeoutMs) };
      } finally {
        clearInterval(beat);
      }
    },
  };
}

export type DrainActivities = ReturnType<typeof createDrainActivities>;
export type CaptureActivities = ReturnType<typeof createCaptureActivities>;

/**
 * Stops a session's container (if it still runs) and waits until the capture has read and committed
 * everything it printed: removing the container also removes the log the capture reads from.
 */
export async function stopAndFinishCapture(
  docker: Docker, capture: CaptureWaiter, container: string, operationId: number, stopGraceS: number, timeoutMs: number,
): Promise<boolean> {
  try {
    await docker.getContainer(container).stop({ t: stopGraceS });
  } catch (err) {
    const status = dockerStatus(err);
    if (status !== 304 && status !== 404 && status !== 409) throw err;
  }
  return capture.waitForCaptureEnd(operationId, timeoutMs);
}
