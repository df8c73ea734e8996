import { closeSync, openSync, readSync } from 'node:fs';
import { HEADER_BYTES, RecordType, decodeHeader, type OutputStream } from './format.js';
import { readRecords } from './reader.js';

export interface OutputPiece {
  stream: OutputStream;
  data: Buffer;
}

/**
 * The last output of a session, enough to make sense of its screen, and where its journal ended when
 * it was read. The tail starts at the last full-screen clear within it (a full-screen program redraws
 * from there), else after a line ending, so that it never starts inside an escape sequence.
 */
export interface OutputTail {
  pieces: OutputPiece[];
  /** The journal's file offset after its last whole record. */
  end: number;
}

/** Clear-screen sequences: ED 2 (`ESC [ 2 J`, also `ESC [ H ESC [ 2 J`) and RIS (`ESC c`). */
const CLEARS = [Buffer.from('\x1b[2J'), Buffer.from('\x1bc')];

export class TailWindow {
  private pieces: OutputPiece[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  add(stream: OutputStream, data: Buffer) {
    this.pieces.push({ stream, data });
    this.bytes += data.length;
    while (this.pieces.length > 1 && this.bytes - this.pieces[0]!.data.length >= this.maxBytes) {
      this.bytes -= this.pieces.shift()!.data.length;
    }
  }

  /** The last `maxBytes` at most, cut at a clear or a line ending as OutputTail says. */
  take(): OutputPiece[] {
    const all = Buffer.concat(this.pieces.map((p) => p.data));
    let from = Math.max(0, all.length - this.maxBytes);
    const clear = Math.max(...CLEARS.map((c) => all.lastIndexOf(c)));
    if (clear >= from) from = clear;
    else if (from > 0) {
      const nl = all.indexOf(0x0a, from);
      from = nl < 0 ? all.length : nl + 1;
    }
    const out: OutputPiece[] = [];
    let at = 0;
    for (const p of this.pieces) {
      const start = Math.max(0, from - at);
      if (start < p.data.length) out.push({ stream: p.stream, data: start ? p.data.subarray(start) : p.data });
      at += p.data.length;
    }
    return out;
  }
}

/**
 * Reads the journal's output to its end, keeping the last `maxBytes` (asynchronously: a long journal
 * does not hold up the process). What was appended meanwhile is read by `catchUp`, synchronously, so
 * that a caller that subscribes to live output in the same step misses nothing and repeats nothing.
 */
export async function readOutputTail(file: string, maxBytes: number): Promise<{ window: TailWindow; end: number }> {
  const window = new TailWindow(maxBytes);
  let end = 0;
  for await (const r of readRecords(file)) {
    if (r.type === RecordType.output) window.add(r.stream ?? 'stdout', r.payload);
    end = r.fileOffset + HEADER_BYTES + r.payload.length;
  }
  return { window, end };
}

/**
 * The records appended to the journal since `end`, read synchronously (a few, at most what one
 * asynchronous read took): the tail is then complete up to this very moment. A torn record at the end
 * (another process's lifecycle record being written) is left out; output is written by this process.
 */
export function catchUp(file: string, read: { window: TailWindow; end: number }): OutputTail {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { pieces: read.window.take(), end: read.end };
  }
  let end = read.end;
  try {
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = Buffer.allocUnsafe(256 * 1024);
      const n = readSync(fd, chunk, 0, chunk.length, end + chunks.reduce((s, c) => s + c.length, 0));
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
    }
    const rest = Buffer.concat(chunks);
    let at = 0;
    while (rest.length - at >= HEADER_BYTES) {
      const h = decodeHeader(rest, at);
      if (rest.length - at < HEADER_BYTES + h.length) break;
      if (h.type === RecordType.output) read.window.add(h.stream ?? 'stdout', rest.subarray(at + HEADER_BYTES, at + HEADER_BYTES + h.length));
      at += HEADER_BYTES + h.length;
    }
    end += at;
  } finally {
    closeSync(fd);
  }
  return { pieces: read.window.take(), end };
}
