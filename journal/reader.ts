import { open } from 'node:fs/promises';
import { HEADER_BYTES, RecordType, decodeHeader, type JournalRecord } from './format.js';

const READ_CHUNK = 1024 * 1024;

/**
 * The journal's complete records from `fromOffset` on, in order. A torn record at the end (one
 * being written, or cut short by a crash) is not returned: read again from the offset after the
 * last record to pick it up once it is whole. A missing file has no records.
 */
export async function* readRecords(file: string, fromOffset = 0): AsyncGenerator<JournalRecord> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    let pos = fromOffset;
    let buf = Buffer.alloc(0);
    let bufStart = pos;
    for (;;) {
      // Refill until a whole record (header and payload) is in the buffer.
      let at = pos - bufStart;
      if (buf.length - at < HEADER_BYTES || buf.length - at < HEADER_BYTES + buf.readUInt32LE(at + 12)) {
        const need = buf.length - at >= HEADER_BYTES ? HEADER_BYTES + buf.readUInt32LE(at + 12) : HEADER_BYTES;
        const chunk = Buffer.allocUnsafe(Math.max(READ_CHUNK, need));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, bufStart + buf.length);
        if (bytesRead === 0) return;
        buf = Buffer.concat([buf.subarray(at), chunk.subarray(0, bytesRead)]);
        bufStart = pos;
        continue;
      }
      const h = decodeHeader(buf, at);
      const payload = buf.subarray(at + HEADER_BYTES, at + HEADER_BYTES + h.length);
      yield { type: h.type, stream: h.stream, time: h.time, fileOffset: pos, payload };
      pos += HEADER_BYTES + h.length;
      at = pos - bufStart;
      if (at === buf.length) {
        buf = Buffer.alloc(0);
        bufStart = pos;
      }
    }
  } finally {
    await handle.close();
  }
}

/** A line longer than this is cut into several events (each still whole UTF-8). */
export const MAX_EVENT_BYTES = 16 * 1024;
/** Output without a newline (a prompt, say) becomes an event once the terminal has been quiet this long. */
export const PARTIAL_LINE_IDLE_MS = 500;
/**
 * At the journal's live end a partial line is cut only this much later than the quiet time itself:
 * a chunk whose timestamp was taken just before the reader looked but written just after still
 * falls on the same side of the cut when the journal is read again, so seqs never change.
 */
const TAIL_MARGIN_MS = 100;

/** Where the next event starts: the record at `fileOffset`, `skip` bytes into its payload. */
export interface JournalPosition {
  fileOffset: number;
  skip: number;
  /** The next event's seq. */
  seq: number;
  /** How many output bytes come before the next event. */
  outputOffset: number;
}
export const JOURNAL_START: JournalPosition = { fileOffset: 0, skip: 0, seq: 0, outputOffset: 0 };

export type JournalEvent =
  | {
      kind: 'output';
      seq: number;
      stream: 'stdout' | 'stderr';
      /** Epoch ms of the event's first byte. */
      time: number;
      /** Epoch ms of the event's last byte. */
      lastTime: number;
      /** Byte offset of the event's first byte in the session's output. */
      offset: number;
      data: Buffer;
      /** Where reading resumes after this event. */
      next: JournalPosition;
    }
  | { kind: LifecycleKind; seq: number; time: number; offset: number; details: Record<string, unknown>; next: JournalPosition }
  | { kind: 'resize'; time: number; cols: number; rows: number };

interface Partial {
  stream: 'stdout' | 'stderr';
  time: number;
  lastTime: number;
  offset: number;
  pieces: Buffer[];
  bytes: number;
}

/** The drains' event of each lifecycle record type (a type missing here is a later version's, skipped). */
const LIFECYCLE_KINDS = {
  [RecordType.started]: 'session_started', [RecordType.ended]: 'session_ended', [RecordType.truncated]: 'output_truncated',
  [RecordType.forward]: 'port_forward', [RecordType.transfer]: 'file_transfer', [RecordType.observer]: 'session_observed',
} as const satisfies { [type: number]: string };
export type LifecycleKind = (typeof LIFECYCLE_KINDS)[keyof typeof LIFECYCLE_KINDS];

/**
 * Cuts a journal into the drains' events (and the recording's), deterministically: the same journal
 * always gives the same events with the same seqs, so delivery can resume from a stored position after
 * any restart. Output is cut at each newline, at MAX_EVENT_BYTES (on a UTF-8 boundary), when the
 * stream changes, and after PARTIAL_LINE_IDLE_MS without output (measured between the records'
 * timestamps, or against the clock at the journal's live end).
 */
export async function* readEvents(
  file: string,
  from: JournalPosition = JOURNAL_START,
  opts: { now?: number; resizes?: boolean; pendingFrom?: (time: number | null) => void } = {},
): AsyncGenerator<JournalEvent> {
  for await (const events of readEventChunks(file, from, opts)) yield* events;
}

/**
 * readEvents, a journal record's events at a time: the same events, for readers of many events (a
 * drain shipping 50 MB of short lines) that would otherwise pay an asynchronous step per event.
 */
export async function* readEventChunks(
  file: string,
  from: JournalPosition = JOURNAL_START,
  opts: { now?: number; resizes?: boolean; pendingFrom?: (time: number | null) => void } = {},
): AsyncGenerator<JournalEvent[]> {
  let seq = from.seq;
  let outputOffset = from.outputOffset;
  let partial: Partial | null = null;
  let first = true;

  /** Position after the bytes consumed so far, when nothing is partial. */
  let posOffset = from.fileOffset;
  let posSkip = from.skip;
  const position = (): JournalPosition => ({ fileOffset: posOffset, skip: posSkip, seq, outputOffset });

  let out: JournalEvent[] = [];
  function cut() {
    if (!partial) return;
    const p = partial;
    partial = null;
    const data = p.pieces.length === 1 ? p.pieces[0]! : Buffer.concat(p.pieces, p.bytes);
    out.push({ kind: 'output', seq: seq++, stream: p.stream, time: p.time, lastTime: p.lastTime, offset: p.offset, data, next: position() });
  }

  for await (const r of readRecords(file, from.fileOffset)) {
    let payload = r.payload;
    if (first && from.skip) payload = payload.subarray(from.skip);
    const skipped = first ? from.skip : 0;
    first = false;

    if (r.type === RecordType.output) {
      const stream = r.stream ?? 'stdout';
      if (partial && (partial.stream !== stream || r.time - partial.lastTime >= PARTIAL_LINE_IDLE_MS)) {
        cut();
      }
      let from2 = 0;
      while (from2 < payload.length) {
        const nl = payload.indexOf(0x0a, from2);
        let end = nl < 0 ? payload.length : nl + 1;
        const room = MAX_EVENT_BYTES - (partial?.bytes ?? 0);
        let full = false;
        if (end - from2 >= room) {
          // Too long for one event: cut at a character boundary within the room left.
          end = from2 + utf8Boundary(payload.subarray(from2), room, partial !== null);
          full = true;
        }
        const piece = payload.subarray(from2, end);
        if (!partial) partial = { stream, time: r.time, lastTime: r.time, offset: outputOffset, pieces: [], bytes: 0 };
        partial.pieces.push(piece);
        partial.bytes += piece.length;
        partial.lastTime = r.time;
        outputOffset += piece.length;
        from2 = end;
        const consumedAll = from2 === payload.length;
        posOffset = consumedAll ? r.fileOffset + HEADER_BYTES + r.payload.length : r.fileOffset;
        posSkip = consumedAll ? 0 : skipped + from2;
        if ((nl >= 0 && end === nl + 1) || full) cut();
      }
      if (payload.length === 0) {
        posOffset = r.fileOffset + HEADER_BYTES + r.payload.length;
        posSkip = 0;
      }
      if (out.length) {
        yield out;
        out = [];
      }
      continue;
    }

    // A lifecycle or resize record: whatever output is pending comes first.
    cut();
    posOffset = r.fileOffset + HEADER_BYTES + r.payload.length;
    posSkip = 0;
    if (r.type === RecordType.resize) {
      if (opts.resizes) {
        const s = JSON.parse(r.payload.toString('utf8')) as { cols: number; rows: number };
        out.push({ kind: 'resize', time: r.time, cols: s.cols, rows: s.rows });
      }
      if (out.length) {
        yield out;
        out = [];
      }
      continue;
    }
    const kind: LifecycleKind | null = (LIFECYCLE_KINDS as { [type: number]: LifecycleKind | undefined })[r.type] ?? null;
    if (!kind) {
      // a record type from a later version: skipped
      if (out.length) {
        yield out;
        out = [];
      }
      continue;
    }
    let details: Record<string, unknown> = {};
    try {
      details = JSON.parse(r.payload.toString('utf8')) as Record<string, unknown>;
    } catch {
      // unreadable details still make an event: its seq must not be lost
    }
    out.push({ kind, seq: seq++, time: r.time, offset: outputOffset, details, next: position() });
    yield out;
    out = [];
  }
  // The live end: a partial line is cut once it has been quiet long enough, never earlier.
  if (partial && opts.now !== undefined && opts.now - (partial as Partial).lastTime >= PARTIAL_LINE_IDLE_MS + TAIL_MARGIN_MS) {
    cut();
  }
  // Whoever waits on what follows the last event (redaction/stream-redaction.ts) learns of output not yet cut into one.
  opts.pendingFrom?.(partial ? (partial as Partial).time : null);
  if (out.length) yield out;
}

/**
 * The largest cut ≤ `max` that does not split a UTF-8 sequence. With `mayBeZero`, a cut at 0 is
 * allowed (the bytes go to the next event); otherwise at least `max` bytes are taken.
 */
export function utf8Boundary(buf: Buffer, max: number, mayBeZero = false): number {
  if (buf.length <= max) return buf.length;
  let cut = max;
  // Step back over continuation bytes (10xxxxxx) to the start of the character that straddles the cut.
  while (cut > 0 && (buf[cut]! & 0xc0) === 0x80) cut--;
  if (cut > 0 || mayBeZero) return cut;
  return max;
}
