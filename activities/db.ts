import type { Db } from '../lib/db.js';
import { recordSessionState } from '../domain/operation-record.js';
import type { SessionRecordUpdate } from '../shapes/session-workflow.js';

/** Activities that write Operation records; they run on the main task queue, next to the database. */
export function createDbActivities(db: Db) {
  return {
    async recordSessionState(u: SessionRecordUpdate): Promise<void> {
      await recordSessionState(db, u);
    },
  };
}

export type DbActivities = ReturnType<typeof createDbActivities>;
