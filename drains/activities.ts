import { Context } from '@temporalio/activity';
import type Docker from 'dockerode';
import type { Db, DbEngine } from '../lib/db.js';
import { dockerStatus } from '../lib/docker.js';
import { containerName } from '../workflows/definitions.js';
import type { CaptureWaiter } from './capture-thread.js';

export interface SessionEndedEvent {
  operationId: number;
  endReason: string;
  endMessage: string | null;
  endedBy: string | null;
  exitCode: number | null;
  endedAt: string;
}

/**
 * Lifecycle events for the drains; on the main task queue. TEMPORARY (issue 9): the `session_ended`
 * event is now the journal's `ended` record, written by the host's teardown; this activity does
 * nothing and stays only until the session workflow stops calling it.
 */
export function createDrainActivities(_deps: { db: Db; engine: DbEngine }) {
  return {
    async recordSessionEnded(_e: SessionEndedEvent): Promise<void> {},
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
