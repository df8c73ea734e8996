import { Readable } from 'node:stream';
import type { Db } from '../lib/db.js';

const PAGE = 1000;
/** What a terminal is taken to be when the client's size is not known (no PTY, or attached later). */
const DEFAULT_SIZE = { cols: 80, rows: 24 };

interface TerminalSize {
  at: number;
  cols: number;
  rows: number;
}

/**
 * The session's recording as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/), streamed
 * page by page from the captured events so that a long session is never held in memory. Output events
 * are already redacted; times are relative to the session's start event (or its first output). The
 * header carries the terminal size the session started in, and each later resize is an "r" event.
 */
export function asciicast(db: Db, session: { operationId: number; app: string; createdAt: string }): Readable {
  async function* lines() {
    // Few per session (the portal throttles and caps them), so all are read at once.
    const sizes: TerminalSize[] = (await db.selectFrom('session_terminal_sizes').select(['time', 'cols', 'rows'])
      .where('operation_id', '=', session.operationId).orderBy('id').execute())
      .map((s) => ({ at: Date.parse(s.time), cols: Number(s.cols), rows: Number(s.rows) }));
    let afterSeq = -1;
    let start: number | null = null;
    let last = 0;
    let nextSize = 0;
    /** "r" events for the sizes set up to `until` (ms), in order. */
    function* resizesUntil(until: number) {
      while (nextSize < sizes.length && sizes[nextSize]!.at <= until) {
        const s = sizes[nextSize++]!;
        last = Math.max(last, (s.at - start!) / 1000);
        yield JSON.stringify([Number(last.toFixed(6)), 'r', `${s.cols}x${s.rows}`]) + '\n';
      }
    }
    for (;;) {
      const rows = await db.selectFrom('session_events').select(['seq', 'kind', 'time', 'data'])
        .where('operation_id', '=', session.operationId).where('seq', '>', afterSeq)
        .orderBy('seq').limit(PAGE).execute();
      for (const r of rows) {
        const at = Date.parse(r.time);
        if (start === null) {
          start = at;
          // The size set last before the session started (a start-on-attach container starts once
          // the client is there) is the one it started in.
          let initial = DEFAULT_SIZE;
          while (nextSize < sizes.length && sizes[nextSize]!.at <= start) initial = sizes[nextSize++]!;
          yield header(session, start, initial);
        }
        if (r.kind !== 'output') continue;
        yield* resizesUntil(at);
        // Replayed output (after a capture restart) may carry a later arrival time than what follows it.
        last = Math.max(last, (at - start) / 1000);
        yield JSON.stringify([Number(last.toFixed(6)), 'o', r.data]) + '\n';
      }
      if (rows.length < PAGE) break;
      afterSeq = Number(rows[rows.length - 1]!.seq);
    }
    if (start === null) yield header(session, Date.parse(session.createdAt), sizes[0] ?? DEFAULT_SIZE);
    else yield* resizesUntil(Infinity);
  }
  return Readable.from(lines());
}

function header(session: { operationId: number; app: string }, startMs: number, size: { cols: number; rows: number }): string {
  return JSON.stringify({
    version: 2, width: size.cols, height: size.rows, timestamp: Math.floor(startMs / 1000),
    title: `essh session ${session.operationId} on ${session.app}`, env: { TERM: 'xterm', SHELL: '/bin/sh' },
  }) + '\n';
}
