import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { EndReason } from '../shapes/enumerations.js';
import { announceJournalAppended } from './news.js';
import { sealJournal } from './seal.js';
import { JournalWriter } from './writer.js';
import { recordJournalEnded } from './rows.js';

export interface JournalEnd {
  operationId: number;
  createdAt: string;
  endReason: EndReason;
  endMessage: string | null;
  endedBy: string | null;
  exitCode: number | null;
  /** When the session ended, if not now (a journal closed after its host came back). */
  endedAt?: string;
  detach?: boolean;
}

/**
 * Writes a session's `ended` record, the last of its drain events, and marks its journal row ended; once:
 * a journal already closed is left alone. No portal, of this process or of another on this data dir (an
 * upgrade's overlap), writes to it any more, so `ended` stays the last record.
 */
export async function closeJournal(deps: { db: Db; dataDir: string }, end: JournalEnd, warn: (msg: string, fields: object) => void): Promise<void> {
  const { db, dataDir } = deps;
  const row = await db.selectFrom('session_journals').select(['ended_at', 'truncated'])
    .where('operation_id', '=', end.operationId).executeTakeFirst();
  if (!row || row.ended_at) return;
  if (!(await sealJournal(dataDir, end.operationId))) {
    warn('a portal of another process still held the journal open after 30 s; writing its end anyway', { operationId: end.operationId });
  }
  const writer = JournalWriter.open(dataDir, end.operationId);
  try {
    const closedAt = nowIso();
    const endedAt = end.endedAt ?? closedAt;
    writer.ended({
      end_reason: end.endReason, end_message: end.endMessage, ended_by: end.endedBy, exit_code: end.exitCode,
      duration_s: Math.round((Date.parse(endedAt) - Date.parse(end.createdAt)) / 100) / 10,
      output_complete: !row.truncated,
      ...(end.detach ? { detached: true } : {}),
    });
    await recordJournalEnded(db, end.operationId, { endedAt: closedAt, outputBytes: writer.bytes });
  } finally {
    writer.close();
  }
  // The drains on this host deliver the last event now rather than at their next look.
  announceJournalAppended(end.operationId);
}
