import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { ServerChannel } from 'ssh2';
import type { Db } from '../lib/db.js';
import { dockerMessage, dockerStatus } from '../lib/docker.js';
import type { Logger } from '../lib/log.js';
import { containerKnownOrTimeout } from '../lib/record-news.js';
import { clientDisconnectedSignal, heartbeatSignal, sessionWorkflowId } from '../workflows/definitions.js';
import { ContainerOutput } from './output.js';
import { TerminalSizeRecorder } from './terminal-sizes.js';

/**
 * Docker's default detach keys (Ctrl-P Ctrl-Q) would swallow those bytes, and Ctrl-P is readline's
 * "previous line". An empty value means the default, so a long sequence no keyboard or program emits
 * by accident stands in for "none".
 */
const DETACH_KEYS = 'ctrl-@,ctrl-^,ctrl-_,ctrl-@,ctrl-^,ctrl-_,ctrl-@,ctrl-^,ctrl-_,ctrl-@';
/** How long a client waits for a session that is still provisioning. */
const READY_TIMEOUT_MS = 5 * 60_000;
/**
 * A container is usually ready well under a second after the shell request, and every millisecond
 * of that wait is on the way to the user's prompt: the record is read often at first (a primary-key
 * read), then less often for slow provisioning.
 */
const pollDelayMs = (waitedMs: number) => (waitedMs < 3000 ? 15 : 100);
const WATCH_MS = 1000;

export interface AttachmentDeps {
  db: Db;
  docker: Docker;
  client: Client;
  heartbeatIntervalS: number;
  log: Logger;
  /** Sessions this portal has a client attached to (a second attach is refused). */
  claims: Set<number>;
}

export interface PtySize {
  rows: number;
  cols: number;
}

type SessionRow = NonNullable<Awaited<ReturnType<typeof readSession>>>;

function readSession(db: Db, id: number) {
  return db
    .selectFrom('operations')
    .select(['id', 'state', 'container_id', 'end_reason', 'end_message', 'ended_by', 'exit_code'])
    .where('id', '=', id)
    .executeTakeFirst();
}

const isOver = (state: string) => state === 'ending' || state === 'ended';

/** The one line a user sees when the session ends for a reason other than its program exiting. */
export function endNotice(row: Pick<SessionRow, 'id' | 'end_reason' | 'end_message' | 'ended_by'>): string {
  const id = Number(row.id);
  const why = row.end_message ? `: ${row.end_message}` : '';
  switch (row.end_reason) {
    case 'terminated':
      return `essh: session ${id} terminated by ${row.ended_by ?? 'an operator'}${why}`;
    case 'expired':
      return `essh: session ${id} expired${why}`;
    case 'exit':
      return `essh: session ${id} has ended (its program exited)`;
    default:
      return `essh: session ${id} ended (${row.end_reason ?? 'unknown reason'})${why}`;
  }
}

/**
 * One SSH session channel attached to one session's container: create-attach-start, stdin/stdout
 * with back-pressure both ways, TTY resizes, heartbeats while it lasts, and exactly one way out.
 */
export class Attachment {
  private readonly connectionId = `portal-${randomBytes(6).toString('hex')}`;
  /** Output bytes taken from the container so far (what the portal has read, not what the client got). */
  bytesFromContainer = 0;
  private container?: Docker.Container;
  private tty = false;
  private sizes?: TerminalSizeRecorder;
  private heartbeatSent = false;
  private channelClosed = false;
  private readonly closed: Promise<void>;

  constructor(
    private readonly deps: AttachmentDeps,
    readonly sessionId: number,
    private readonly channel: ServerChannel,
    private readonly pty: PtySize | null,
  ) {
    this.closed = new Promise((resolve) =>
      channel.once('close', () => {
        this.channelClosed = true;
        resolve();
      }),
    );
  }

  /** Lines from the portal itself go to stderr, so they never mix into a command's stdout. */
  say(line: string, opts: { ownLine?: boolean } = {}) {
    if (this.channelClosed) return;
    // On a terminal the cursor may sit after a prompt: a notice starts on a line of its own.
    const nl = this.pty ? '\r\n' : '\n';
    this.channel.stderr.write((opts.ownLine && this.pty ? nl : '') + line + nl);
  }

  async fail(line: string, code = 1) {
    this.say(line);
    await this.finish(code);
  }

  /** Everything written so far reaches the client before the exit status and the close. */
  private async finish(code: number) {
    if (this.channelClosed) return;
    // ssh2 never calls back a write on a channel the client is already closing: the close ends the wait.
    await Promise.race([new Promise<void>((r) => this.channel.write(Buffer.alloc(0), () => r())), this.closed]);
    if (this.channelClosed) return;
    this.channel.exit(code);
    this.channel.end();
  }

  resize(size: PtySize) {
    if (this.pty) Object.assign(this.pty, size);
    if (this.container && this.tty) {
      this.container.resize({ h: size.rows, w: size.cols }).catch((err) =>
        this.deps.log.debug({ err: dockerMessage(err), session: this.sessionId }, 'resize failed'),
      );
      this.sizes?.record(size);
    }
  }

  /** Resolves once the client has been let go, whatever happened. */
  async run(opts: { onLeftEarly?: () => Promise<unknown>; progress?: boolean } = {}): Promise<void> {
    const { claims } = this.deps;
    const id = this.sessionId;
    if (claims.has(id)) return this.fail(`essh: session ${id} already has a client attached; only one connection at a time is allowed.`);
    claims.add(id);
    try {
      await this.attachAndServe(opts);
    } catch (err) {
      this.deps.log.warn({ err: dockerMessage(err), session: id }, 'attaching a client failed');
      await this.fail(`essh: could not attach to session ${id}: ${dockerMessage(err)}`);
      if (this.heartbeatSent) await this.disconnected('the portal could not attach');
    } finally {
      claims.delete(id);
    }
  }

  private async waitUntilReady(progress: boolean): Promise<SessionRow | string | null> {
    const id = this.sessionId;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let announced = false;
    const started = Date.now();
    for (;;) {
      if (this.channelClosed) return null;
      const row = await readSession(this.deps.db, id);
      if (!row) return `essh: session ${id} was not found.`;
      if (isOver(row.state)) return endNotice(row);
      if (row.state === 'active') return `essh: session ${id} already has a client attached; only one connection at a time is allowed.`;
      // The record names the container while still `provisioning` only for a start-on-attach session,
      // as soon as the container exists (see provisionContainer).
      if ((row.state === 'waiting_for_client' || row.state === 'provisioning') && row.container_id) {
        if (announced) this.say(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return row;
      }
      if (progress && !announced && Date.now() - started > 300) {
        announced = true;
        this.say(`essh: session ${id}: provisioning container…`);
      }
      if (Date.now() > deadline) return `essh: session ${id} is still not ready after ${READY_TIMEOUT_MS / 60_000} minutes; try again later.`;
      await containerKnownOrTimeout(id, pollDelayMs(Date.now() - started));
    }
  }

  private async attachAndServe(opts: { onLeftEarly?: () => Promise<unknown>; progress?: boolean }) {
    const { docker, client, log } = this.deps;
    const id = this.sessionId;
    const ready = await this.waitUntilReady(opts.progress ?? false);
    if (ready === null) {
      await opts.onLeftEarly?.();
      return;
    }
    if (typeof ready === 'string') return this.fail(ready);

    const container = docker.getContainer(ready.container_id!);
    const info = await container.inspect();
    this.tty = info.Config.Tty;
    if (this.tty && this.pty) {
      // The size the client attaches with, before anything is started: the recording's first size.
      this.sizes = new TerminalSizeRecorder(this.deps.db, id, log);
      this.sizes.record(this.pty);
    }
    // A start-on-attach container is still `created`: attach first, then start, so no output is lost.
    const mustStart = info.State.Status === 'created';
    const abort = new AbortController();
    const exited = (container.wait({ condition: mustStart ? 'next-exit' : 'not-running', abortSignal: abort.signal }) as Promise<{
      StatusCode: number;
    }>).then((r) => ({ kind: 'exit' as const, code: r.StatusCode }));
    exited.catch(() => undefined);
    const stream = (await container.attach({
      stream: true, stdin: true, stdout: true, stderr: true, hijack: true,
      // An already running container printed its prompt before anyone attached: replay it.
      logs: !mustStart,
      detachKeys: DETACH_KEYS,
    })) as unknown as Duplex;
    const output = new ContainerOutput(this.channel, this.channel.stderr, !this.tty);
    let watch: NodeJS.Timeout | undefined;
    let beat: NodeJS.Timeout | undefined;
    try {
      stream.on('error', (err) => log.debug({ err: err.message, session: id }, 'attach stream error'));
      stream.on('data', (chunk: Buffer) => (this.bytesFromContainer += chunk.length));
      output.on('error', () => undefined);
      const outputDone = new Promise<void>((r) => {
        output.once('finish', r);
        output.once('close', r);
      });
      stream.pipe(output);
      // A TTY's end of input is a byte (Ctrl-D), not EOF; an EOF on a TTY attach would cut the output.
      this.channel.pipe(stream, { end: !this.tty });
      this.container = container;

      if (mustStart) {
        await container.start().catch((err) => {
          if (dockerStatus(err) !== 304) throw err;
        });
      }
      if (this.pty && this.tty) this.resize(this.pty);

      const workflow = client.workflow.getHandle(sessionWorkflowId(id));
      // The first heartbeat is what makes the session `active`.
      await workflow.signal(heartbeatSignal, { connection_id: this.connectionId });
      this.heartbeatSent = true;
      beat = setInterval(() => {
        workflow.signal(heartbeatSignal, { connection_id: this.connectionId }).catch((err) =>
          log.warn({ err: (err as Error).message, session: id }, 'heartbeat signal failed'),
        );
      }, this.deps.heartbeatIntervalS * 1000);

      const endedElsewhere = new Promise<{ kind: 'ended'; row: SessionRow }>((resolve) => {
        watch = setInterval(() => {
          readSession(this.deps.db, id)
            .then((row) => {
              if (row && isOver(row.state) && row.end_reason && row.end_reason !== 'exit') resolve({ kind: 'ended', row });
            })
            .catch(() => undefined);
        }, WATCH_MS);
      });
      const outcome = await Promise.race([
        exited,
        endedElsewhere,
        this.closed.then(() => ({ kind: 'client' as const })),
      ]);
      clearInterval(beat);
      clearInterval(watch);

      if (outcome.kind === 'client') {
        await this.disconnected('the client closed the connection');
        return;
      }
      if (outcome.kind === 'exit') {
        // Docker closes the attach stream once the output is drained; what is left goes out first.
        await Promise.race([outputDone, this.closed, new Promise((r) => setTimeout(r, 5000))]);
        const row = await readSession(this.deps.db, id);
        if (row && isOver(row.state) && row.end_reason && row.end_reason !== 'exit') this.say(endNotice(row), { ownLine: true });
        await this.finish(outcome.code);
        // The host agent reports the exit itself; a clientDisconnected arriving first would record
        // `disconnect` instead of `exit`, so it is only sent if the session is still open later.
        void this.disconnectIfStillOpen();
        return;
      }
      this.say(endNotice(outcome.row), { ownLine: true });
      await this.finish(outcome.row.exit_code ?? 1);
    } finally {
      clearInterval(beat);
      clearInterval(watch);
      abort.abort();
      this.channel.unpipe(stream);
      stream.unpipe(output);
      stream.destroy();
      output.destroy();
      await this.sizes?.close();
    }
  }

  private async disconnected(reason: string) {
    if (!this.heartbeatSent) return;
    await this.deps.client.workflow
      .getHandle(sessionWorkflowId(this.sessionId))
      .signal(clientDisconnectedSignal, { connection_id: this.connectionId, reason })
      .catch((err) => this.deps.log.warn({ err: (err as Error).message, session: this.sessionId }, 'clientDisconnected signal failed'));
  }

  private async disconnectIfStillOpen() {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const row = await readSession(this.deps.db, this.sessionId).catch(() => undefined);
      if (row && isOver(row.state)) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    await this.disconnected('the container exited');
  }
}
