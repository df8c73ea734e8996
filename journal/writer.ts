import { closeSync, constants, fstatSync, ftruncateSync, mkdirSync, openSync, writevSync } from 'node:fs';
import path from 'node:path';
import { processCounters } from '../lib/metrics.js';
import {
  RecordType, encodeHeader, type EndedDetails, type ForwardDetails, type ObserverDetails, type OutputStream, type RecordTypeCode, type StartedDetails,
  type TransferDetails,
} from './format.js';

/** `<data dir>/journals`: one file per session, readable by essh's user only. */
export function journalDir(dataDir: string): string {
  return path.join(dataDir, 'journals');
}

export function journalPath(dataDir: string, operationId: number): string {
  return path.join(journalDir(dataDir), `${operationId}.journal`);
}

export class JournalWriteError extends Error {}

/**
 * Appends records to one session's journal. Every append is one synchronous write of header and
 * payload on a file opened O_APPEND: when it returns, the bytes are in the kernel's page cache, so a
 * `kill -9` of this process afterwards loses none of them (only a crash of the machine could).
 * Several writers (provisioning, the portal, teardown) may append to the same file; each record lands
 * whole.
 */
export class JournalWriter {
  private fd: number | null = null;
  private size = 0;
  private truncated = false;

  private constructor(readonly file: string, private readonly maxBytes: number) {}

  /** Opens (creating if need be) the session's journal for appending. */
  static open(dataDir: string, operationId: number, opts: { maxBytes?: number } = {}): JournalWriter {
    const file = journalPath(dataDir, operationId);
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const w = new JournalWriter(file, opts.maxBytes ?? Number.MAX_SAFE_INTEGER);
    w.fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    w.size = fstatSync(w.fd).size;
    return w;
  }

  /** The journal's size when opened plus what this writer appended. */
  get bytes(): number {
    return this.size;
  }

  get isEmpty(): boolean {
    return this.size === 0;
  }

  /**
   * Appends output. Returns false once the journal has reached its size bound: a `truncated` record
   * is written the first time, and the caller passes later output on unjournaled.
   */
  output(stream: OutputStream, chunk: Buffer): boolean {
    if (this.truncated) return false;
    if (this.size + chunk.length > this.maxBytes) {
      this.truncated = true;
      this.append(RecordType.truncated, null, Buffer.from(JSON.stringify({ after_bytes: this.size })));
      return false;
    }
    this.append(RecordType.output, stream, chunk);
    return true;
  }

  resize(size: { cols: number; rows: number }): void {
    this.append(RecordType.resize, null, Buffer.from(JSON.stringify({ cols: size.cols, rows: size.rows })));
  }

  started(details: StartedDetails): void {
    this.append(RecordType.started, null, Buffer.from(JSON.stringify(details)));
  }

  forward(details: ForwardDetails): void {
    this.append(RecordType.forward, null, Buffer.from(JSON.stringify(details)));
  }

  transfer(details: TransferDetails): void {
    this.append(RecordType.transfer, null, Buffer.from(JSON.stringify(details)));
  }

  observer(details: ObserverDetails): void {
    this.append(RecordType.observer, null, Buffer.from(JSON.stringify(details)));
  }

  ended(details: EndedDetails): void {
    this.append(RecordType.ended, null, Buffer.from(JSON.stringify(details)));
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }

  private append(type: RecordTypeCode, stream: OutputStream | null, payload: Buffer) {
    if (this.fd === null) throw new JournalWriteError(`journal ${this.file} is closed`);
    const header = encodeHeader(type, stream, Date.now(), payload.length);
    const want = header.length + payload.length;
    let wrote: number;
    try {
      wrote = writevSync(this.fd, [header, payload]);
    } catch (err) {
      throw new JournalWriteError(`could not append to the session journal: ${(err as Error).message}`);
    }
    if (wrote !== want) {
      // A short write (a full disk) would leave half a record: cut it off so the file stays readable.
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // the reader ignores a torn end anyway
      }
      throw new JournalWriteError(`could not append to the session journal: wrote ${wrote} of ${want} bytes (is the disk full?)`);
    }
    this.size += want;
    processCounters.journalBytes.inc(want);
  }
}
