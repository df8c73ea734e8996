import os from 'node:os';
import { sql } from 'kysely';
import type { Db, DbEngine } from '../lib/db.js';
import { nowIso } from '../lib/db.js';

export type EventKind = 'output' | 'session_started' | 'session_ended';

export interface NewEvent {
  kind: EventKind;
  /** stdout or stderr for output (a TTY merges both into stdout); lifecycle otherwise. */
  stream?: 'stdout' | 'stderr';
  time: string;
  byteOffset: number;
  containerId: string | null;
  data: string;
}

export const HOSTNAME = os.hostname();

/**
 * Appends a session's events with the next seqs, atomically with the capture position, so that a
 * restart resumes exactly where the last committed batch ended: no seq is used twice or skipped.
 *
 * On Postgres an advisory lock serialises the appends: ids then commit in id order, which the drains
 * rely on when they read "everything after my cursor" (otherwise a slower transaction could commit an
 * id below a cursor that has already moved past it).
 */
export async function appendEvents(
  db: Db,
  engine: DbEngine,
  stream: { operationId: number; accountId: number; bytesCaptured?: number; captureEnded?: boolean },
  events: readonly NewEvent[],
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    if (engine === 'postgres') await sql`select pg_advisory_xact_lock(32473001)`.execute(tx);
    await tx.insertInto('session_streams')
      .values({ operation_id: stream.operationId, account_id: stream.accountId, next_seq: 0, bytes_captured: 0, capture_ended_at: null })
      .onConflict((oc) => oc.column('operation_id').doNothing())
      .execute();
    const row = await tx.updateTable('session_streams')
      .set((eb) => ({
        next_seq: eb('next_seq', '+', events.length),
        ...(stream.bytesCaptured !== undefined ? { bytes_captured: stream.bytesCaptured } : {}),
        ...(stream.captureEnded ? { capture_ended_at: nowIso() } : {}),
      }))
      .where('operation_id', '=', stream.operationId)
      .returning('next_seq')
      .executeTakeFirstOrThrow();
    if (!events.length) return;
    const first = Number(row.next_seq) - events.length;
    const createdAt = nowIso();
    await tx.insertInto('session_events')
      .values(events.map((e, i) => ({
        operation_id: stream.operationId,
        account_id: stream.accountId,
        seq: first + i,
        kind: e.kind,
        stream: e.kind === 'output' ? (e.stream ?? 'stdout') : 'lifecycle',
        time: e.time,
        byte_offset: e.byteOffset,
        host: HOSTNAME,
        container_id: e.containerId,
        // PostgreSQL's text cannot hold NUL (a terminal may print one); it becomes U+FFFD there, as
        // any other byte that is not text does when the output is decoded.
        data: engine === 'postgres' ? e.data.replaceAll('\0', '\uFFFD') : e.data,
        created_at: createdAt,
      })))
      .execute();
  });
}
