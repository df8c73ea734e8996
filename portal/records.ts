import type { Db } from '../lib/db.js';
import type { Logger } from '../lib/log.js';
import { SessionOutputJournal } from '../journal/session-output.js';

/** What the portal's records of a forward or a file transfer need. */
export interface RecordDeps {
  db: Db;
  dataDir: string;
  journalMaxBytes: number;
  log: Logger;
}

/** The portal connection's user as a journal record names who did something (journal/format.ts). */
export async function recordedUser(db: Db, userId: number): Promise<{ id: number; name: string; email: string }> {
  const user = await db.selectFrom('users').select(['id', 'name', 'email']).where('id', '=', userId).executeTakeFirst();
  return { id: Number(user?.id ?? userId), name: user?.name ?? '', email: user?.email ?? '' };
}

/**
 * Appends one record (a port forward's, a file transfer's) to a session's journal, opened for it and
 * closed at once: a teardown never waits on a journal held open between records. A failure is logged,
 * never thrown: the forward or the transfer itself is done.
 */
export function appendRecord(deps: RecordDeps, sessionId: number, what: string, append: (journal: SessionOutputJournal) => void): void {
  const { log } = deps;
  let journal: SessionOutputJournal | undefined;
  try {
    journal = new SessionOutputJournal(deps.db, deps.dataDir, sessionId, deps.journalMaxBytes, (err, w) => log.warn({ err, session: sessionId }, w));
    append(journal);
  } catch (err) {
    log.warn({ err: (err as Error).message, session: sessionId }, `journaling ${what} failed`);
  } finally {
    journal?.close();
  }
}
