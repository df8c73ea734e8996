import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { observerText, type ForwardDetails, type ObserverDetails, type TransferDetails } from '../journal/format.js';
import { readEvents } from '../journal/reader.js';
import { forwardText, transferText } from '../drains/formats.js';
import { contextTail, readyCount, redactionWindows, type Piece, type RedactionWindow } from '../redaction/stream-redaction.js';


/** What a terminal is taken to be when the client's size is not known (no PTY). */
export const DEFAULT_SIZE = { cols: 80, rows: 24 };

export interface RecordedSession {
  operationId: number;
  app: string;
  /** When the session was created: the header's time when the journal holds nothing yet. */
  createdAt: string;
}

/**
 * The session's recording as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/), read from
 * its journal as it is read, never whole in memory. The header has the terminal size the session's
 * output started in (the last `resize` before its first output; 80×24 without one); later resizes are
 * "r" events, port forwards, file transfers and observers joining and leaving "m" markers (journal/format.ts
 * ForwardDetails, TransferDetails and ObserverDetails; never a forward's or a file's data), and output "o" events, redacted with the account's rules as the drains' events are, and
 * decoded as UTF-8 across events (a character split between two events shows whole). Times are
 * seconds since the program's attach (the journal's first resize or output).
 */
export async function* asciicastLines(file: string, session: RecordedSession, redact: Redact): AsyncGenerator<string> {
  let start: number | null = null;
  let size = DEFAULT_SIZE;
  let headerSent = false;
  let last = 0;
  const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  // Lines wait here to be redacted many at a time (a trip to the redaction workers each), and the last
  // ones until what follows them is known: redaction looks across events (redaction/stream-redaction.ts).
  let pending: { time: number; code: 'o' | 'r' | 'm'; text: string; piece?: Piece }[] = [];
  let pendingChars = 0;
  let context: Piece[] = [];
  async function* flush(closed: boolean) {
    const outputs = pending.flatMap((p) => (p.piece ? [p.piece] : []));
    const ready = readyCount(outputs, closed);
    const texts = (await redact(redactionWindows(context, outputs.slice(0, ready), outputs.slice(ready)))).flat();
    context = contextTail([...context, ...outputs.slice(0, ready)]);
    let n = 0;
    let k = 0;
    for (; k < pending.length; k++) {
      const p = pending[k]!;
      if (p.piece && n === ready) break;
      yield JSON.stringify([p.time, p.code, p.piece ? texts[n++]! : p.text]) + '\n';
    }
    pending = pending.slice(k);
    pendingChars = pending.reduce((sum, p) => sum + p.text.length, 0);
  }
  const at = (time: number) => {
    // Never backwards: players expect growing times.
    last = Math.max(last, (time - start!) / 1000);
    return Number(last.toFixed(6));
  };
  // A journal is read to its end: a partial line at the end of a running session's journal is shown too.
  for await (const ev of readEvents(file, undefined, { resizes: true, now: Number.POSITIVE_INFINITY })) {
    if (ev.kind === 'port_forward' || ev.kind === 'file_transfer') {
      // A marker on the timeline (what was reached or copied, how much went each way), never the bytes;
      // one before the program's attach sits at its start.
      const text = ev.kind === 'port_forward' ? forwardText(ev.details as unknown as ForwardDetails) : transferText(ev.details as unknown as TransferDetails);
      pending.push({ time: start === null ? 0 : at(ev.time), code: 'm', text });
      continue;
    }
    if (ev.kind === 'session_observed') {
      // Who watched, from where and for how long: a marker where they joined and one where they left.
      pending.push({ time: start === null ? 0 : at(ev.time), code: 'm', text: observerText(ev.details as unknown as ObserverDetails) });
      continue;
    }
    if (ev.kind !== 'resize' && ev.kind !== 'output') continue;
    // Time starts when the program does (its attach writes the first resize), as asciinema's own
    // recordings do: the wait between the session's start and the client's attach is not the program's.
    start ??= ev.time;
    if (ev.kind === 'resize') {
      if (!headerSent) size = { cols: ev.cols, rows: ev.rows };
      else pending.push({ time: at(ev.time), code: 'r', text: `${ev.cols}x${ev.rows}` });
      continue;
    }
    if (ev.kind !== 'output') continue;
    if (!headerSent) {
      headerSent = true;
      yield header(session, start, size);
    }
    const text = decoders[ev.stream].write(ev.data);
    if (text) {
      pending.push({ time: at(ev.time), code: 'o', text, piece: { text, time: ev.time, lastTime: ev.lastTime } });
      pendingChars += text.length;
      if (pending.length >= PENDING_LINES || pendingChars >= PENDING_CHARS) yield* flush(false);
    }
  }
  if (!headerSent) yield header(session, start ?? Date.parse(session.createdAt), size);
  for (const d of Object.values(decoders)) {
    const rest = d.end();
    if (rest) pending.push({ time: last, code: 'o', text: rest, piece: { text: rest, time: Number.POSITIVE_INFINITY, lastTime: Number.POSITIVE_INFINITY } });
  }
  yield* flush(true);
}

/** The account's redaction of windows of output (redaction/redaction-pool.ts Redactor). */
export type Redact = (windows: RedactionWindow[]) => Promise<string[][]>;
const PENDING_LINES = 512;
const PENDING_CHARS = 64 * 1024;

export function asciicastStream(file: string, session: RecordedSession, redact: Redact): Readable {
  return Readable.from(asciicastLines(file, session, redact), { objectMode: false });
}

function header(session: RecordedSession, startMs: number, size: { cols: number; rows: number }): string {
  return JSON.stringify({
    version: 2, width: size.cols, height: size.rows, timestamp: Math.floor(startMs / 1000),
    title: `essh session ${session.operationId} on ${session.app}`, env: { TERM: 'xterm', SHELL: '/bin/sh' },
  }) + '\n';
}
