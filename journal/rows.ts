// The one writer of `session_journals` (journal/tables.ts): where a session's journal is, whether it is
// complete, and when its file was deleted. The host's provisioning, the portal's output, the journal's
// close and the retention pass call these rather than writing the row themselves (and deleting the file).
import { rm } from 'node:fs/promises';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { forgetJournalSeal } from './seal.js';
import { journalPath } from './writer.js';

/**
 * A journal was started on `hostId` (provisioning). Again for the same session (a retried provisioning,
 * or one that moved hosts), only the host changes.
 */
export async function recordJournalStarted(db: Db, j: { operationId: number; accountId: number; hostId: string; createdAt?: string }): Promise<void> {
  await db.insertInto('session_journals')
    .values({
      operation_id: j.operationId, account_id: j.accountId, host_id: j.hostId, created_at: j.createdAt ?? nowIso(),
      ended_at: null, output_bytes: 0, truncated: 0, deleted_at: null,
    })
    .onConflict((oc) => oc.column('operation_id').doUpdateSet({ host_id: j.hostId })).execute();
}

/** The journal reached its bound: what follows reached the client but not the journal. */
export async function recordJournalTruncated(db: Db, operationId: number): Promise<void> {
  await db.updateTable('session_journals').set({ truncated: 1 }).where('operation_id', '=', operationId).execute();
}

/** Its `ended` record is written: the journal is whole at `outputBytes`. */
export async function recordJournalEnded(db: Db, operationId: number, end: { endedAt: string; outputBytes: number }): Promise<void> {
  await db.updateTable('session_journals').set({ ended_at: end.endedAt, output_bytes: end.outputBytes })
    .where('operation_id', '=', operationId).execute();
}

/** Its file was deleted past the retention. */
async function recordJournalDeleted(db: Db, operationId: number): Promise<void> {
  await db.updateTable('session_journals').set({ deleted_at: nowIso() }).where('operation_id', '=', operationId).execute();
}

/** Deletes a session's journal file past its retention, keeping its row (with `deleted_at`: its recording answers 410). */
export async function deleteJournal(db: Db, dataDir: string, operationId: number): Promise<void> {
  await rm(journalPath(dataDir, operationId), { force: true });
  forgetJournalSeal(dataDir, operationId);
  await recordJournalDeleted(db, operationId);
}
