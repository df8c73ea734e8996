import { Writable } from 'node:stream';
import type { OutputStream } from './format.js';

export interface Target {
  write(chunk: Buffer, cb: (err?: Error | null) => void): boolean;
}

/** Appends one chunk of output to the session's journal; false: do not pass it on (see JournaledOutput). */
export type Journal = (stream: OutputStream, chunk: Buffer) => boolean;

/** When a chunk may go: the portal's scheduling of output among sessions (portal/output-pacing.ts). */
export interface OutputPace {
  /** false: the chunk may go now; true: `go` is called once it may (then ask again). */
  wait(go: () => void): boolean;
  passed(bytes: number): void;
}

/**
 * Carries a program's output to the SSH channel one chunk at a time, appending each chunk to the
 * session's journal *before* the channel gets it (CONTRACT §4: every byte the client receives is in
 * the journal first). A chunk is acknowledged only once the channel has taken it (its SSH window had
 * room), so a slow client slows the program instead of growing a buffer in the portal. 'finish' means
 * everything has been handed to the channel.
 *
 * Without a TTY, Docker multiplexes stdout and stderr on one stream in frames of an 8-byte header
 * (stream type, 3 zero bytes, big-endian length) and a payload; `demux` splits them back. (dockerode's
 * own demuxStream writes without waiting, which would defeat the back-pressure.)
 */
export class JournaledOutput extends Writable {
  private pending: Buffer = Buffer.alloc(0);
  private passedSinceYield = 0;

  constructor(
    private readonly stdout: Target,
    private readonly stderr: Target,
    private readonly demux: boolean,
    private readonly journal: Journal,
    private readonly pace?: OutputPace,
  ) {
    super({ highWaterMark: 64 * 1024 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    try {
      if (!this.demux) return this.pass('stdout', chunk, done);
      this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
      this.drainFrames(done);
    } catch (err) {
      done(err as Error);
    }
  }

  /**
   * A chunk waits before it is journaled and sent while the pace says so (another session's client is
   * typing: this one, if it prints in bulk, waits in Docker meanwhile). After every YIELD_EVERY_BYTES
   * the next chunk waits for a turn of the event loop: a program printing as fast as it can would
   * otherwise be copied for as long as its socket has data (libuv reads a ready socket up to 32 times,
   * 64 kB each, before it looks at another), and another session's keystroke would wait behind megabytes.
   */
  private pass(stream: OutputStream, payload: Buffer, done: (err?: Error | null) => void): void {
    // Destroyed while it waited: nothing more goes out.
    if (this.pace?.wait(() => this.destroyed || this.pass(stream, payload, done))) {
      this.passedSinceYield = 0;
      return;
    }
    // Reached from callbacks too (a frame after the first of a chunk, a chunk that waited): a journal
    // that cannot be written fails the stream here, never the process.
    let journaled: boolean;
    try {
      journaled = this.journal(stream, payload);
    } catch (err) {
      return done(err as Error);
    }
    if (!journaled) return done(new OutputStopped());
    this.pace?.passed(payload.length);
    this.passedSinceYield += payload.length;
    const target = stream === 'stderr' ? this.stderr : this.stdout;
    if (this.passedSinceYield < YIELD_EVERY_BYTES) return void target.write(payload, done);
    this.passedSinceYield = 0;
    target.write(payload, (err) => (err ? done(err) : setImmediate(done)));
  }

  private drainFrames(done: (err?: Error | null) => void): void {
    if (this.pending.length < 8) return done();
    const type = this.pending[0];
    const length = this.pending.readUInt32BE(4);
    if (this.pending.length < 8 + length) return done();
    const payload = this.pending.subarray(8, 8 + length);
    this.pending = this.pending.subarray(8 + length);
    if (payload.length === 0) return this.drainFrames(done);
    this.pass(type === 2 ? 'stderr' : 'stdout', payload, (err) => (err ? done(err) : this.drainFrames(done)));
  }
}

/** How much one session's output is copied before the next chunk waits for the event loop's next turn. */
const YIELD_EVERY_BYTES = 64 * 1024;

/** The journal refused a chunk (the session is being torn down): nothing more goes to the client. */
export class OutputStopped extends Error {
  constructor() {
    super('the session output stopped');
  }
}
