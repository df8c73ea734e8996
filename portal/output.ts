import { Writable } from 'node:stream';

interface Target {
  write(chunk: Buffer, cb: (err?: Error | null) => void): boolean;
}

/**
 * Carries a container's output to the SSH channel one chunk at a time: a chunk is acknowledged only once
 * the channel has taken it (its SSH window had room), so a slow client slows the container's stream
 * instead of growing a buffer in the portal. 'finish' means everything has been handed to the channel.
 *
 * Without a TTY, Docker multiplexes stdout and stderr on one stream in frames of an 8-byte header
 * (stream type, 3 zero bytes, big-endian length) and a payload; `demux` splits them back. (dockerode's
 * own demuxStream writes without waiting, which would defeat the back-pressure.)
 */
export class ContainerOutput extends Writable {
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    private readonly stdout: Target,
    private readonly stderr: Target,
    private readonly demux: boolean,
  ) {
    super({ highWaterMark: 64 * 1024 });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (!this.demux) {
      this.stdout.write(chunk, done);
      return;
    }
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.drainFrames(done);
  }

  private drainFrames(done: (err?: Error | null) => void): void {
    if (this.pending.length < 8) return done();
    const type = this.pending[0];
    const length = this.pending.readUInt32BE(4);
    if (this.pending.length < 8 + length) return done();
    const payload = this.pending.subarray(8, 8 + length);
    this.pending = this.pending.subarray(8 + length);
    const target = type === 2 ? this.stderr : this.stdout;
    if (payload.length === 0) return this.drainFrames(done);
    target.write(payload, (err) => (err ? done(err) : this.drainFrames(done)));
  }
}
