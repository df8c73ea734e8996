import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { announceRecordChanged } from '../lib/record-news.js';
import { SESSION_STATES, operationStatusFor, type SessionRecordUpdate } from '../workflows/definitions.js';

/** Activities that write Operation records; they run on the main task queue, next to the database. */
export function createDbActivities(db: Db) {
  return {
    /**
     * Idempotent under retries and safe against reordering: a row only moves forward through the
     * states, and an ended row is never changed again.
     */
    async recordSessionState(u: SessionRecordUpdate): Promise<void> {
      const rank = SESSION_STATES.indexOf(u.state);
      const notLaterThan = SESSION_STATES.slice(0, rank + 1);
      await db
        .updateTable('operations')
        .set({
          state: u.state,
          status: operationStatusFor(u.state, u.endReason ?? null),
          container_id: u.containerId ?? null,
          connected_at: u.connectedAt ?? null,
          ended_at: u.endedAt ?? null,
          end_reason: u.endReason ?? null,
          end_message: u.endMessage ?? null,
          ended_by: u.endedBy ?? null,
          exit_code: u.exitCode ?? null,
          updated_at: nowIso(),
        })
        .where('id', '=', u.operationId)
        .where('state', 'in', u.state === 'ended' ? SESSION_STATES.slice(0, -1) : notLaterThan)
        .execute();
      announceRecordChanged(u.operationId);
    },
  };
}

export type DbActivities = ReturnType<typeof createDbActivities>;
