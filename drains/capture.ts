import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { Db, DbEngine } from '../lib/db.js';
import { LABELS, dockerStatus } from '../lib/docker.js';
import { ContainerEventFollower } from '../lib/docker-events.js';
import { containerName } from '../workflows/definitions.js';
import { appendEvents, type NewEvent } from './events.js';
import { RedactionRulesCache, redact } from './redaction.js';

/** A line longer than this is cut into several events (each still whole UTF-8). */
export const MAX_EVENT_BYTES = 16 * 1024;
/** Output without a newline (a prompt, say) becomes an event once the terminal has been quiet this long. */
const PARTIAL_LINE_IDLE_MS = 500;
const FLUSH_EVERY_MS = 50;
const EVENTS_PER_WRITE = 2000;
/** Past this many unwritten events the reader pauses; the engine keeps the output in its log meanwhile. */
const MAX_QUEUED_EVENTS = 10_000;

type Stream = 'stdout' | 'stderr';
interface Pending {
  stream: Stream;
  raw: Buffer;
  offset: number;
  time: string;
}

/**
 * Captures what every session container shows on its TTY, for the drains and the recording.
 *
 * It follows the engine's log of the container (`docker logs --follow`) rather than attaching to it: the
 * log driver writes the TTY output to disk whatever readers do, so a slow capture (or a slow database)
 * can never hold back the user's terminal, and the log starts at the container's first byte, which lets
 * a restarted agent skip exactly the bytes already committed (`session_streams.bytes_captured`) and
 * continue without loss or duplicates. With a TTY the log holds what the terminal showed: echoed input
 * included, input typed with echo off (`read -s`) absent.
 */
export class CaptureAgent {
  private readonly captures = new Map<string, SessionCapture>();
  private readonly rules: RedactionRulesCache;
  private events?: ContainerEventFollower;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly deps: { docker: Docker; db: Db; engine: DbEngine; instanceId: string; intervalS: number; log: Logger },
  ) {
    this.rules = new RedactionRulesCache(deps.db);
  }

  async start(): Promise<void> {
    this.events = new ContainerEventFollower({
      docker: this.deps.docker,
      events: ['start'],
      labels: [`${LABELS.instance}=${this.deps.instanceId}`, LABELS.session],
      onEvent: (e) => this.begin(e.id, Number(e.Actor?.Attributes?.[LABELS.operationId])),
      onResumed: () => void this.scan(),
      log: this.deps.log,
      what: 'capture',
    });
    await this.events.start();
    await this.scan();
    this.timer = setInterval(() => void this.scan(), this.deps.intervalS * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.events?.stop();
    await Promise.all([...this.captures.values()].map((c) => c.stop()));
    this.captures.clear();
  }

  /**
   * Resolves once the session's capture has read its container's output to the end and committed it (or
   * after `timeoutMs`): the session's last output then precedes its "ended" event.
   */
  async waitForCaptureEnd(operationId: number, timeoutMs: number): Promise<boolean> {
    let capture = [...this.captures.values()].find((c) => c.operationId === operationId);
    if (!capture) {
      // Not followed yet (an agent that has just restarted, say): start now, so that nothing the
      // container printed is lost when it is removed.
      const info = await this.deps.docker.getContainer(containerName(operationId)).inspect().catch((err) => {
        if (dockerStatus(err) === 404) return null;
        throw err;
      });
      if (!info || info.State.Status === 'created') return true;
      const stream = await this.deps.db.selectFrom('session_streams').select('capture_ended_at')
        .where('operation_id', '=', operationId).executeTakeFirst();
      if (stream?.capture_ended_at) return true;
      this.begin(info.Id, operationId);
      capture = this.captures.get(info.Id);
      if (!capture) return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    try {
      return await Promise.race([capture.done.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Picks up containers whose start event was missed (agent restarts, event stream gaps). */
  private async scan(): Promise<void> {
    if (this.stopped) return;
    try {
      const containers = await this.deps.docker.listContainers({
        all: true,
        filters: { label: [`${LABELS.instance}=${this.deps.instanceId}`, LABELS.session] },
      });
      for (const c of containers) {
        if (c.State === 'created' || this.captures.has(c.Id)) continue;
        const operationId = Number(c.Labels[LABELS.operationId]);
        if (!operationId) continue;
        const stream = await this.deps.db.selectFrom('session_streams').select('capture_ended_at')
          .where('operation_id', '=', operationId).executeTakeFirst();
        if (!stream?.capture_ended_at) this.begin(c.Id, operationId);
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'capture scan failed');
    }
  }

  private begin(containerId: string, operationId: number) {
    if (this.stopped || !operationId || this.captures.has(containerId)) return;
    const capture = new SessionCapture({ ...this.deps, rules: this.rules, containerId, operationId });
    this.captures.set(containerId, capture);
    void capture.run().catch((err) => {
      if (!this.stopped) this.deps.log.warn({ err, operationId }, 'capture failed; the next scan retries');
    }).finally(() => {
      if (this.captures.get(containerId) === capture) this.captures.delete(containerId);
    });
  }
}

class SessionCapture {
  readonly operationId: number;
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private accountId = 0;
  private stream?: Readable;
  private stopping = false;
  /** Bytes of the container's output before this one were committed by an earlier capture. */
  private skip = 0;
  /** Position in the container's output of the next byte the stream delivers. */
  private position = 0;
  private partial: Pending | null = null;
  private queue: Pending[] = [];
  private idleTimer?: NodeJS.Timeout;
  private lastDataAt = 0;
  private flushTimer?: NodeJS.Timeout;
  private flushing: Promise<void> | null = null;
  private tty = true;
  /** Without a TTY the engine multiplexes stdout and stderr in frames: an 8-byte header, then the payload. */
  private frameHeader = Buffer.alloc(0);
  private frameLeft = 0;
  private frameStream: Stream = 'stdout';

  constructor(
    private readonly deps: {
      docker: Docker; db: Db; engine: DbEngine; log: Logger; rules: RedactionRulesCache; containerId: string; operationId: number;
    },
  ) {
    this.operationId = deps.operationId;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  async run(): Promise<void> {
    const { db, engine, docker, containerId, operationId } = this.deps;
    try {
      const op = await db.selectFrom('operations')
        .innerJoin('users', 'users.id', 'operations.user_id')
        .innerJoin('apps', 'apps.id', 'operations.app_id')
        .select(['operations.account_id', 'operations.container_size_mb', 'operations.command', 'operations.created_at',
          'users.id as user_id', 'users.name as user_name', 'users.email as user_email', 'apps.handle as app', 'apps.id as app_id'])
        .where('operations.id', '=', operationId)
        .executeTakeFirst();
      if (!op) return; // a container of a session this database does not know
      this.accountId = Number(op.account_id);
      const known = await db.selectFrom('session_streams').select(['bytes_captured', 'capture_ended_at'])
        .where('operation_id', '=', operationId).executeTakeFirst();
      if (known?.capture_ended_at) return;
      if (!known) {
        await appendEvents(db, engine, { operationId, accountId: this.accountId, bytesCaptured: 0 }, [{
          kind: 'session_started',
          time: new Date().toISOString(),
          byteOffset: 0,
          containerId,
          data: JSON.stringify({
            user: { id: Number(op.user_id), name: op.user_name, email: op.user_email },
            app: op.app, app_id: Number(op.app_id), container_size_mb: op.container_size_mb,
            command: op.command ? JSON.parse(op.command) : null, created_at: op.created_at,
          }),
        }]);
      }
      this.skip = Number(known?.bytes_captured ?? 0);

      // dockerd ends a follower that lags behind when the container stops, before it has read the whole
      // log (35 of 37 followers that began with output already in the log came up short when their
      // container stopped), and a follower that began after the stop reads to the end, nearly always
      // (one came up short once, on a heavily loaded machine). So the log is read again, skipping what
      // this capture already has, until a read that began with the container stopped finds nothing more.
      for (;;) {
        let stream: Readable;
        let stoppedBeforeThisPass: boolean;
        try {
          const info = await docker.getContainer(containerId).inspect();
          this.tty = info.Config.Tty;
          stoppedBeforeThisPass = !info.State.Running;
          stream = (await docker.getContainer(containerId).logs({ follow: true, stdout: true, stderr: true })) as unknown as Readable;
        } catch (err) {
          // Removed: nothing left to read. (Before the first pass, the last one's bytes are all there is.)
          if (dockerStatus(err) === 404) break;
          throw err;
        }
        this.stream = stream;
        await new Promise<void>((resolve, reject) => {
          stream.on('data', (chunk: Buffer) => (this.tty ? this.onData(chunk, 'stdout') : this.demux(chunk)));
          stream.once('end', resolve);
          stream.once('close', resolve);
          stream.once('error', reject);
        });
        if (this.stopping) return;
        if (stoppedBeforeThisPass && this.position <= this.skip) break;
        this.startPassAgain();
      }
      // The container has stopped: everything it printed is read; commit the rest and mark the end.
      this.cutPartial();
      await this.flushAll();
      await appendEvents(db, engine, { operationId, accountId: this.accountId, bytesCaptured: Math.max(this.skip, this.position), captureEnded: true }, []);
    } finally {
      clearTimeout(this.idleTimer);
      clearTimeout(this.flushTimer);
      this.resolveDone();
    }
  }

  /** The next log stream starts again at the container's first byte: what was read is skipped. */
  private startPassAgain() {
    this.skip = Math.max(this.skip, this.position);
    this.position = 0;
    // A stream that ended inside a frame leaves a header or payload half read; the next starts at a frame.
    this.frameHeader = Buffer.alloc(0);
    this.frameLeft = 0;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.stream?.destroy();
    // What was read is still committed, so that the next capture starts after it.
    this.cutPartial();
    await this.flushAll().catch(() => undefined);
  }

  private demux(chunk: Buffer) {
    let at = 0;
    while (at < chunk.length) {
      if (this.frameLeft === 0) {
        const need = 8 - this.frameHeader.length;
        this.frameHeader = Buffer.concat([this.frameHeader, chunk.subarray(at, at + need)]);
        at += need;
        if (this.frameHeader.length < 8) return;
        this.frameStream = this.frameHeader[0] === 2 ? 'stderr' : 'stdout';
        this.frameLeft = this.frameHeader.readUInt32BE(4);
        this.frameHeader = Buffer.alloc(0);
        continue;
      }
      const take = Math.min(this.frameLeft, chunk.length - at);
      this.onData(chunk.subarray(at, at + take), this.frameStream);
      this.frameLeft -= take;
      at += take;
    }
  }

  /** `chunk` is output as shown; positions count these bytes only (never the frame headers). */
  private onData(chunk: Buffer, streamName: Stream) {
    if (this.stopping) return;
    if (this.partial && this.partial.stream !== streamName) this.cutPartial();
    const start = this.position;
    this.position += chunk.length;
    if (this.position <= this.skip) return;
    if (start < this.skip) chunk = chunk.subarray(this.skip - start);
    const chunkOffset = Math.max(start, this.skip);
    const now = new Date().toISOString();

    let from = 0;
    while (from < chunk.length) {
      const nl = chunk.indexOf(0x0a, from);
      const end = nl < 0 ? chunk.length : nl + 1;
      const piece = chunk.subarray(from, end);
      if (this.partial) {
        this.partial.raw = Buffer.concat([this.partial.raw, piece]);
      } else {
        this.partial = { stream: streamName, raw: Buffer.from(piece), offset: chunkOffset + from, time: now };
      }
      if (nl >= 0) this.cutPartial();
      else if (this.partial.raw.length >= MAX_EVENT_BYTES) this.cutLongLine();
      from = end;
    }
    this.lastDataAt = Date.now();
    // One timer per quiet spell rather than one per chunk: fast output arrives a line per chunk.
    if (this.partial && !this.idleTimer) this.armIdleTimer(PARTIAL_LINE_IDLE_MS);
    this.scheduleFlush();
    if (this.queue.length > MAX_QUEUED_EVENTS) this.stream?.pause();
  }

  private armIdleTimer(ms: number) {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (!this.partial) return;
      const quietFor = Date.now() - this.lastDataAt;
      if (quietFor < PARTIAL_LINE_IDLE_MS) return this.armIdleTimer(PARTIAL_LINE_IDLE_MS - quietFor);
      this.cutPartial();
      this.scheduleFlush();
    }, ms);
  }

  private cutPartial() {
    if (this.partial && this.partial.raw.length) this.queue.push(this.partial);
    this.partial = null;
  }

  /** Cuts a line too long for one event at a UTF-8 character boundary; the rest stays pending. */
  private cutLongLine() {
    const p = this.partial!;
    while (p.raw.length >= MAX_EVENT_BYTES) {
      const cut = utf8Boundary(p.raw, MAX_EVENT_BYTES);
      this.queue.push({ stream: p.stream, raw: p.raw.subarray(0, cut), offset: p.offset, time: p.time });
      p.raw = p.raw.subarray(cut);
      p.offset += cut;
    }
  }

  private scheduleFlush() {
    if (this.flushTimer || !this.queue.length) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flushAll().catch((err) => {
        this.deps.log.warn({ err, operationId: this.operationId }, 'writing captured output failed; retrying');
        setTimeout(() => this.scheduleFlush(), 1000).unref();
      });
    }, FLUSH_EVERY_MS);
  }

  /** Writes every queued event; concurrent callers share one writer and resolve when the queue is empty. */
  private flushAll(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => this.flushAll());
    if (!this.queue.length) return Promise.resolve();
    // `finally` runs on a later tick, so `flushing` is cleared only after it was set.
    this.flushing = this.writeQueue().finally(() => (this.flushing = null));
    return this.flushing;
  }

  private async writeQueue(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.slice(0, EVENTS_PER_WRITE);
      // Redaction happens before anything is stored; if the rules cannot be read, nothing is written.
      const rules = await this.deps.rules.rulesFor(this.accountId);
      const events: NewEvent[] = batch.map((p) => ({
        kind: 'output', stream: p.stream, time: p.time, byteOffset: p.offset, containerId: this.deps.containerId,
        data: redact(p.raw.toString('utf8'), rules),
      }));
      const last = batch[batch.length - 1]!;
      await appendEvents(this.deps.db, this.deps.engine,
        { operationId: this.operationId, accountId: this.accountId, bytesCaptured: last.offset + last.raw.length }, events);
      this.queue.splice(0, batch.length);
      if (this.queue.length < MAX_QUEUED_EVENTS / 2) this.stream?.resume();
    }
  }
}

/** The largest cut ≤ `max` that does not split a UTF-8 sequence. */
export function utf8Boundary(buf: Buffer, max: number): number {
  if (buf.length <= max) return buf.length;
  let cut = max;
  // Step back over continuation bytes (10xxxxxx) to the start of the character that straddles the cut.
  while (cut > 0 && (buf[cut]! & 0xc0) === 0x80) cut--;
  return cut > 0 ? cut : max;
}
