import { Readable } from 'node:stream';
import type { Db } from '../lib/db.js';

const PAGE = 1000;

/**
 * The session's recording as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/), streamed
 * page by page from the captured events so that a long session is never held in memory. Output events
 * are already redacted; times are relative to the session's start event (or its first output).
 */
export function asciicast(db: Db, session: { operationId: number; app: string; createdAt: string }): Readable {
  async function* lines() {
    let afterSeq = -1;
    let start: number | null = null;
    let last = 0;
    let headerSent = false;
    for (;;) {
      const rows = await db.selectFrom('session_events').select(['seq', 'kind', 'time', 'data'])
        .where('operation_id', '=', session.operationId).where('seq', '>', afterSeq)
        .orderBy('seq').limit(PAGE).execute();
      for (const r of rows) {
        const at = Date.parse(r.time);
        if (start === null) start = at;
        if (!headerSent) {
          headerSent = true;
          yield header(session, start);
        }
        if (r.kind !== 'output') continue;
        // Replayed output (after a capture restart) may carry a later arrival time than what follows it.
        last = Math.max(last, (at - start) / 1000);
        yield JSON.stringify([Number(last.toFixed(6)), 'o', r.data]) + '\n';
      }
      if (rows.length < PAGE) break;
      afterSeq = Number(rows[rows.length - 1]!.seq);
    }
    if (!headerSent) yield header(session, Date.parse(session.createdAt));
  }
  return Readable.from(lines());
}

function header(session: { operationId: number; app: string }, startMs: number): string {
  return JSON.stringify({
    version: 2, width: 80, height: 24, timestamp: Math.floor(startMs / 1000),
    title: `essh session ${session.operationId} on ${session.app}`, env: { TERM: 'xterm', SHELL: '/bin/sh' },
  }) + '\n';
}
