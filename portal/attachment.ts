import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { ServerChannel } from 'ssh2';
import type { Db } from '../lib/db.js';
import { dockerMessage } from '../lib/docker.js';
import type { Logger } from '../lib/log.js';
import { imageProgram } from '../host/containers.js';
import { oomSince } from '../host/oom.js';
import { SessionOutputJournal } from '../journal/session-output.js';
import { JournalWriteError } from '../journal/writer.js';
import {
  clientDisconnectedSignal, describeQuery, heartbeatSignal, idleTimeoutSignal, programExitedSignal, sessionWorkflowId,
} from '../shapes/session-workflow.js';
import type { AttachedNotes } from './attached-notes.js';
import { IdleTimer, idleLimitOf } from './idle-timeout.js';
import { JournaledOutput, OutputStopped } from '../journal/journaled-output.js';
import { ALREADY_ATTACHED, SessionWatch, endNotice, isOver, type SessionRow } from './session-watch.js';
import type { Audiences } from './observers.js';
import type { OutputPacing, PacedStream } from './output-pacing.js';
import type { ObserverDetails } from '../journal/format.js';

/**
 * Docker's default detach keys (Ctrl-P Ctrl-Q) would swallow those bytes, and Ctrl-P is readline's
 * "previous line". An empty value means the default, so a long sequence no keyboard or program emits
 * by accident stands in for "none".
 */
const DETACH_KEYS = 'ctrl-@,ctrl-^,ctrl-_,ctrl-@,ctrl-^,ctrl-_,ctrl-@,ctrl-^,ctrl-_,ctrl-@';
/** How long the client's exit status waits for the record to say `ending` (its plan slot then is free). */
const ENDING_WAIT_MS = 5000;
/** A window being dragged sends dozens of sizes a second; the recording needs the ones that stayed. */
const RESIZE_RECORD_MS = 100;
/** Past this many sizes in one attachment the rest are not journaled (a client sending sizes in a loop). */
const MAX_RESIZE_RECORDS = 10_000;
/** How long a reattach waits for the workflow to say which connections it has. */
const DESCRIBE_TIMEOUT_MS = 10_000;

/**
 * This portal process: the stack host it serves (when it runs on one) and a random id for this start of
 * it. Both go into each connection id, so that the portal a host process runs after a crash can tell
 * the connections of its dead predecessor (same host, another start) from those of a live portal.
 */
export interface PortalInstance {
  hostId?: string;
  bootId: string;
  /**
   * The portal instances of this host that still run in another process: a predecessor draining its
   * clients after an upgrade's SIGTERM (lib/handover.ts). Their connections are alive, not dead ones.
   */
  liveElsewhere?: () => Set<string>;
}

export function newPortalInstance(hostId?: string, liveElsewhere?: () => Set<string>): PortalInstance {
  return { hostId, bootId: randomBytes(4).toString('hex'), liveElsewhere };
}

/** `portal-<boot>-<random>@<host>` (a portal on no host: `portal-<boot>-<random>`). */
function connectionIdFor(p: PortalInstance): string {
  const id = `portal-${p.bootId}-${randomBytes(6).toString('hex')}`;
  return p.hostId ? `${id}@${p.hostId}` : id;
}

/** The boot id of another start of this host's portal that made the connection, else null. */
function otherBootOf(connectionId: string, p: PortalInstance): string | null {
  if (!p.hostId) return null;
  const m = /^portal-([0-9a-f]+)-[0-9a-f]+@(.+)$/.exec(connectionId);
  return m !== null && m[2] === p.hostId && m[1] !== p.bootId ? m[1]! : null;
}

/**
 * Whether the connection was one of an earlier start of this host's portal that is gone (SIGKILL,
 * OOM, power loss, or a drain past its deadline), and with it the connection, though it never sent
 * `clientDisconnected`. A predecessor still draining its clients (an upgrade) is not gone.
 */
export function isPredecessorConnection(connectionId: string, p: PortalInstance, live = p.liveElsewhere?.()): boolean {
  const boot = otherBootOf(connectionId, p);
  return boot !== null && !live?.has(boot);
}

/** Whether the connection is served by another process of this host that still runs (a predecessor draining). */
export function isLivePeerConnection(connectionId: string, p: PortalInstance, live = p.liveElsewhere?.()): boolean {
  const boot = otherBootOf(connectionId, p);
  return boot !== null && live?.has(boot) === true;
}

export interface AttachmentDeps {
  db: Db;
  docker: Docker;
  client: Client;
  heartbeatIntervalS: number;
  dataDir: string;
  journalMaxBytes: number;
  log: Logger;
  /** Sessions this portal has a client attached to (a second attach is refused). */
  claims: Set<number>;
  notes: AttachedNotes;
  portal: PortalInstance;
  /** The session's extra env (opened at attach time, never kept): SessionsService.extraEnv. */
  extraEnv: (sessionId: number) => Promise<Record<string, string>>;
  /** The observers of the sessions this portal serves (portal/observers.ts). */
  audiences: Audiences;
  /** This portal's scheduling of its sessions' output: bulk output waits while a client types. */
  pacing: OutputPacing;
}

export interface AttachOptions {
  /** Nobody will attach to a session whose client left while it was provisioning. */
  onLeftEarly?: () => Promise<unknown>;
  /** A progress line while the container is provisioned (a terminal's client). */
  progress?: boolean;
  serve?: (containerId: string) => Promise<number>;
}

/** When the connection got past the portal's guard and when it authenticated (ms since the epoch). */
export interface ConnectionTiming {
  admittedAt: number;
  authenticatedAt: number;
}

export interface PtySize {
  rows: number;
  cols: number;
}

/**
 * One SSH session channel attached to one session: it starts the session's program in the session's
 * container by `docker exec` (with a TTY if the client asked for one), journals every byte of output
 * before the client gets it, carries stdin and resizes, sends heartbeats while it lasts, and reports
 * how it ended, with exactly one way out.
 */
export class Attachment {
  private readonly connectionId: string;
  /** Connections of a dead predecessor of this portal that this attachment replaces (a reattach). */
  private replaces: string[] = [];
  /** Output bytes taken from the program so far (what the portal has read, not what the client got). */
  bytesFromContainer = 0;
  /** This attachment's share of the portal's pacing (its output waits while others type, if it prints in bulk). */
  readonly pace: PacedStream;
  private exec?: Docker.Exec;
  private journal?: SessionOutputJournal;
  private heartbeatSent = false;
  private beat?: NodeJS.Timeout;
  private channelClosed = false;
  private readonly closed: Promise<void>;
  private readonly watch: SessionWatch;
  private resizes = 0;
  private lastResizeAt = 0;
  /** The size last journaled: the same size again tells a recording nothing. */
  private journaledSize = '';
  private resizeTimer?: NodeJS.Timeout;
  private idle?: IdleTimer;

  constructor(
    private readonly deps: AttachmentDeps,
    readonly sessionId: number,
    private readonly channel: ServerChannel,
    private readonly pty: (PtySize & { term?: string }) | null,
    private readonly timing?: ConnectionTiming,
  ) {
    this.connectionId = connectionIdFor(deps.portal);
    this.pace = deps.pacing.stream();
    this.watch = new SessionWatch(deps.db, sessionId);
    this.closed = new Promise((resolve) =>
      channel.once('close', () => {
        this.channelClosed = true;
        this.watch.stop();
        resolve();
      }),
    );
  }

  /** Lines from the portal itself go to stderr, so they never mix into a command's stdout. */
  say(line: string, opts: { ownLine?: boolean } = {}) {
    // Ended but not yet closed: a write now would throw (write after end) out of the portal's process.
    if (this.channelClosed || !this.channel.stderr.writable) return;
    // On a terminal the cursor may sit after a prompt: a notice starts on a line of its own.
    const nl = this.pty ? '\r\n' : '\n';
    this.channel.stderr.write((opts.ownLine && this.pty ? nl : '') + line + nl);
  }

  async fail(line: string, code = 1) {
    this.say(line);
    await this.finish(code);
  }

  /** Everything written so far reaches the client before the exit status and the close. */
  async finish(code: number) {
    if (this.channelClosed) return;
    // ssh2 never calls back a write on a channel the client is already closing: the close ends the wait.
    await Promise.race([new Promise<void>((r) => this.channel.write(Buffer.alloc(0), () => r())), this.closed]);
    if (this.channelClosed) return;
    this.channel.exit(code);
    this.channel.end();
  }

  resize(size: PtySize) {
    if (this.pty) Object.assign(this.pty, size);
    if (!this.exec || !this.pty) return;
    this.exec.resize({ h: size.rows, w: size.cols }).catch((err) =>
      this.deps.log.debug({ err: dockerMessage(err), session: this.sessionId }, 'resize failed'),
    );
    this.journalResize();
  }

  /** At most one size per RESIZE_RECORD_MS, always the last of a burst. */
  private journalResize() {
    const wait = this.lastResizeAt + RESIZE_RECORD_MS - Date.now();
    if (wait > 0) {
      this.resizeTimer ??= setTimeout(() => {
        this.resizeTimer = undefined;
        this.journalResize();
      }, wait);
      return;
    }
    if (!this.journal || !this.pty || this.resizes >= MAX_RESIZE_RECORDS || this.journal.sealed) return;
    const size = `${this.pty.cols}x${this.pty.rows}`;
    if (size === this.journaledSize) return;
    this.lastResizeAt = Date.now();
    this.resizes++;
    try {
      this.journal.writer.resize(this.pty);
      this.journaledSize = size;
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message, session: this.sessionId }, 'journaling a resize failed');
    }
  }

  /**
   * Resolves once the client has been let go, whatever happened. `serve`, when given, serves the channel
   * in the session's container instead of the session's program (the portal's SFTP: portal/sftp.ts),
   * resolving with its exit status; the session is attached (heartbeats, one client) all the same.
   */
  async run(opts: AttachOptions = {}): Promise<void> {
    const { claims } = this.deps;
    const id = this.sessionId;
    if (claims.has(id)) return this.fail(`essh: session ${id} already has a client attached; only one connection at a time is allowed.`);
    claims.add(id);
    try {
      await this.attachAndServe(opts);
    } catch (err) {
      const why = err instanceof JournalWriteError ? `its output could not be recorded on its host (${err.message})` : dockerMessage(err);
      this.deps.log.warn({ err: why, session: id }, 'serving a client failed');
      await this.fail(`essh: session ${id}: ${why}`);
      if (this.heartbeatSent) await this.disconnected('the portal could not serve the client');
    } finally {
      this.stopHeartbeats();
      this.deps.notes.forget(id, this.connectionId);
      claims.delete(id);
      this.watch.stop();
      clearTimeout(this.resizeTimer);
      this.closeJournal();
    }
  }

  private async attachAndServe(opts: AttachOptions) {
    const { docker, client, log } = this.deps;
    const id = this.sessionId;
    const started = Date.now();
    let announced = false;
    const ready = await this.watch.untilContainer(() => {
      if (!opts.progress) return;
      announced = true;
      this.say(`essh: session ${id}: provisioning container…`);
    }, () => this.mayReattach());
    if (ready === null) {
      await opts.onLeftEarly?.();
      return;
    }
    if ('refused' in ready) return this.fail(ready.refused);
    // A client back after its portal died: the session is active and its heartbeat timeout running
    // since the crash, so this client counts from now on, however long the engine takes with the
    // `docker exec` when hundreds come back at once.
    if (this.replaces.length > 0) await this.startHeartbeats();
    const readyAt = Date.now();
    if (announced) this.say(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (opts.serve) return this.serveInstead(opts.serve(ready.containerId));

    const container = docker.getContainer(ready.containerId);
    const tty = this.pty !== null;
    this.journal = new SessionOutputJournal(this.deps.db, this.deps.dataDir, id, this.deps.journalMaxBytes,
      (err, what) => log.warn({ err, session: id }, what));
    if (this.pty) this.journalResize();
    const program = await this.program(ready.row);
    const env = await this.environment();
    const execAskedAt = Date.now();
    const exec = await container.exec({
      Cmd: program,
      AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: tty, DetachKeys: DETACH_KEYS,
      Env: env,
      // Engines with API 1.42+ start the TTY at the client's size; older ones ignore it, and the
      // resize right after the start sets it (a program reading its size at once may see 0×0 there).
      ...(this.pty ? { ConsoleSize: [this.pty.rows, this.pty.cols] } : {}),
    });
    const programStartedAt = Date.now();
    const stream = (await exec.start({ hijack: true, stdin: true, Tty: tty, ...(this.pty ? { ConsoleSize: [this.pty.rows, this.pty.cols] } : {}) })) as unknown as Duplex;
    this.exec = exec;
    this.logAttached(readyAt, execAskedAt, programStartedAt);
    if (this.pty) this.resize(this.pty);

    const journal = this.journal;
    // Who watches this session while its program runs here (`watch-<id>`: portal/observers.ts).
    const audience = this.deps.audiences.open(id, {
      tell: (line) => this.say(line, { ownLine: true }),
      record: (details) => this.journalObserver(details),
      size: () => (this.pty ? { cols: this.pty.cols, rows: this.pty.rows } : null),
    });
    // Torn down meanwhile: nothing more is journaled, so nothing more goes out. Observers get each
    // chunk once it is journaled, as the client does.
    const output = new JournaledOutput(this.channel, this.channel.stderr, !tty, (stream, chunk) => {
      if (!journal.output(stream, chunk)) return false;
      audience.publish(stream, chunk);
      return true;
    }, this.pace);
    try {
      stream.on('error', (err) => log.debug({ err: err.message, session: id }, 'exec stream error'));
      stream.on('data', (chunk: Buffer) => {
        this.bytesFromContainer += chunk.length;
        this.idle?.touch();
      });
      this.channel.on('data', (chunk: Buffer) => {
        this.idle?.touch();
        this.pace.received(chunk.length);
      });
      let stopped = false;
      output.on('error', (err) => {
        if (err instanceof OutputStopped) stopped = true;
        stream.destroy();
      });
      const programEnded = new Promise<{ kind: 'exit' }>((r) => {
        output.once('finish', () => r({ kind: 'exit' }));
        output.once('close', () => r({ kind: 'exit' }));
      });
      stream.pipe(output);
      // Without a TTY the client's end of input is the program's EOF; a TTY's is a byte (Ctrl-D).
      this.channel.pipe(stream, { end: !tty });

      const workflow = client.workflow.getHandle(sessionWorkflowId(id));
      // The first heartbeat is what makes the session `active` (a reattach has sent it already).
      await this.startHeartbeats();
      await this.startIdleTimer();

      const outcome = await Promise.race([
        programEnded,
        this.watch.untilEndedElsewhere().then((row) => ({ kind: 'ended' as const, row })),
        this.closed.then(() => ({ kind: 'client' as const })),
      ]);
      this.stopHeartbeats();
      this.watch.stop();

      if (outcome.kind === 'client') {
        audience.close(`essh: session ${id}'s client closed its connection; the session ends.`);
        await this.disconnected('the client closed the connection');
        return;
      }
      if (outcome.kind === 'ended' || stopped) {
        const row = outcome.kind === 'ended' ? outcome.row : await this.watch.read();
        audience.close(row ? endNotice(row) : `essh: session ${id} has ended.`);
        if (row) this.say(endNotice(row), { ownLine: true });
        await this.finish(row?.exit_code ?? 1);
        return;
      }
      // The program exited (its output is all in the journal and handed to the channel).
      const exitedAt = Date.now();
      const { ExitCode } = await exec.inspect();
      const code = ExitCode ?? 1;
      audience.close(`essh: session ${id} has ended (its program exited with status ${code}).`);
      const oom = code === 137 && oomSince(ready.containerId, programStartedAt);
      await workflow.signal(programExitedSignal, { connection_id: this.connectionId, exit_code: code, oom_killed: oom })
        .catch((err) => log.warn({ err: (err as Error).message, session: id }, 'programExited signal failed'));
      // The exit status goes out once the session no longer holds its plan slot (CONTRACT §8).
      const signalledAt = Date.now();
      const row = await new SessionWatch(this.deps.db, id).untilEnding(ENDING_WAIT_MS);
      // What a quick command's user waits for after its program ended (issue 20's `-- true`).
      log.info({ session: id, inspect_and_signal_ms: signalledAt - exitedAt, until_ending_ms: Date.now() - signalledAt }, 'program exited; exit status going out');
      if (oom) this.say(`essh: session ${id}: the program ran out of memory and was killed`, { ownLine: true });
      else if (row && isOver(row.state) && row.end_reason && row.end_reason !== 'exit') this.say(endNotice(row), { ownLine: true });
      await this.finish(code);
    } finally {
      // Observers still here leave while the journal is open, so that their leaving is journaled.
      audience.close(`essh: session ${id} is no longer served by this portal.`);
      this.stopHeartbeats();
      this.idle?.stop();
      this.channel.unpipe(stream);
      stream.unpipe(output);
      stream.destroy();
      output.destroy();
      // Nothing more is appended: a teardown waiting in another process may write `ended` now.
      this.closeJournal();
    }
  }

  /** The session's client is `served` (its SFTP), not its program: the session ends when it is over. */
  private async serveInstead(served: Promise<number>) {
    const id = this.sessionId;
    await this.startHeartbeats();
    const outcome = await Promise.race([
      served.then((code) => ({ kind: 'exit' as const, code })),
      this.watch.untilEndedElsewhere().then((row) => ({ kind: 'ended' as const, row })),
      this.closed.then(() => ({ kind: 'client' as const })),
    ]);
    this.stopHeartbeats();
    this.watch.stop();
    if (outcome.kind === 'ended') {
      this.say(endNotice(outcome.row), { ownLine: true });
      return this.finish(outcome.row.exit_code ?? 1);
    }
    // Its records (the files copied) are in the journal before the session's teardown seals it.
    const code = outcome.kind === 'exit' ? outcome.code : await served.catch(() => 1);
    if (outcome.kind === 'client') return this.disconnected('the client closed the connection');
    await this.deps.client.workflow.getHandle(sessionWorkflowId(id))
      .signal(programExitedSignal, { connection_id: this.connectionId, exit_code: code, oom_killed: false })
      .catch((err) => this.deps.log.warn({ err: (err as Error).message, session: id }, 'programExited signal failed'));
    await new SessionWatch(this.deps.db, id).untilEnding(ENDING_WAIT_MS);
    await this.finish(code);
  }

  /** An observer's joining or leaving, in the journal this attachment holds open. */
  private journalObserver(details: ObserverDetails): boolean {
    try {
      return this.journal?.observer(details) ?? false;
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message, session: this.sessionId }, 'journaling an observer failed');
      return false;
    }
  }

  private closeJournal() {
    this.journal?.close();
    this.journal = undefined;
  }

  /**
   * The session is `active`, and not through this portal (its claims say so): a client is attached
   * elsewhere, and this one is refused, unless every connection the workflow knows of was a dead
   * predecessor's of this portal. Then the client that lost its connection to it is coming back (with
   * the owner's key: the token was spent), and the session lives on if it does so within the
   * heartbeat timeout. Asked only for sessions that are already active: a first attach costs nothing.
   */
  private async mayReattach(): Promise<true | string> {
    const { client, log, portal } = this.deps;
    const id = this.sessionId;
    if (!portal.hostId) return ALREADY_ATTACHED(id);
    // The common case, and the one that comes by the hundred: the note this host's portal left.
    const noted = this.deps.notes.read(id);
    if (noted !== null) {
      if (!isPredecessorConnection(noted, portal)) return ALREADY_ATTACHED(id);
      this.replaces = [noted];
      return true;
    }
    // No note (attached through a portal that kept none): the workflow knows its connections.
    let timer: NodeJS.Timeout | undefined;
    try {
      const d = await Promise.race([
        client.workflow.getHandle(sessionWorkflowId(id)).query(describeQuery),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer')), DESCRIBE_TIMEOUT_MS))),
      ]);
      if (d.state !== 'active' || d.end_reason) return ALREADY_ATTACHED(id);
      if (!d.connections.every((c) => isPredecessorConnection(c, portal))) return ALREADY_ATTACHED(id);
      this.replaces = d.connections;
      return true;
    } catch (err) {
      log.warn({ err: (err as Error).message, session: id }, 'asking the workflow whether a client may reattach failed');
      return `essh: session ${id} could not be reattached just now (its workflow did not answer); try again in a moment.`;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Like sshd's "Accepted publickey", one line per client attached, with where its wait went: the key
   * exchange and authentication, the session's readiness (and for a reattach the workflow's answer),
   * and the `docker exec`. A burst of reattaches after a portal restart is read from these lines.
   */
  private logAttached(readyAt: number, execAskedAt: number, execCreatedAt: number) {
    const t = this.timing;
    const now = Date.now();
    this.deps.log.info({
      session: this.sessionId, reattach: this.replaces.length > 0,
      ...(t ? { handshake_ms: t.authenticatedAt - t.admittedAt, until_ready_ms: readyAt - t.authenticatedAt } : {}),
      prepare_ms: execAskedAt - readyAt, exec_create_ms: execCreatedAt - execAskedAt, exec_start_ms: now - execCreatedAt,
    }, 'client attached');
  }

  /**
   * What the program's environment adds to the container's (the app's env): the client's terminal type
   * (CONTRACT §4), then the session's extra env, which the engine puts over the app's for the same name.
   */
  private async environment(): Promise<string[]> {
    const env: Record<string, string> = this.pty ? { TERM: this.pty.term || 'xterm' } : {};
    Object.assign(env, await this.deps.extraEnv(this.sessionId));
    return Object.entries(env).map(([k, v]) => `${k}=${v}`);
  }

  /** The session's command, else the app's, else what the image runs by default. */
  private async program(row: SessionRow): Promise<string[]> {
    if (row.command) return JSON.parse(row.command) as string[];
    const app = await this.deps.db.selectFrom('apps').select(['command', 'image']).where('id', '=', row.app_id).executeTakeFirst();
    if (app?.command) return JSON.parse(app.command) as string[];
    return imageProgram(this.deps.docker, app?.image ?? '');
  }


  /**
   * The first heartbeat, then one every interval until `stopHeartbeats`. A reattach's dead predecessor
   * connections go only once this one is known, so the workflow is never left without a connection
   * (which would end the session); left in place, one would keep the session for a heartbeat timeout
   * after this client leaves.
   */
  private async startHeartbeats() {
    if (this.heartbeatSent) return;
    const { client, log, notes } = this.deps;
    const id = this.sessionId;
    const workflow = client.workflow.getHandle(sessionWorkflowId(id));
    // Noted first: a reattach window (portal/reattach-window.ts) stops vouching for the dead
    // connection as soon as the note names this one.
    notes.note(id, this.connectionId);
    await workflow.signal(heartbeatSignal, { connection_id: this.connectionId });
    this.heartbeatSent = true;
    for (const gone of this.replaces) {
      await workflow.signal(clientDisconnectedSignal, { connection_id: gone, reason: 'its portal stopped; the client reattached' })
        .catch((err) => log.warn({ err: (err as Error).message, session: id }, 'clientDisconnected signal for a dead connection failed'));
    }
    this.beat = setInterval(() => {
      // The SDK's error says only that the signal failed; its cause (the gRPC status) says why.
      workflow.signal(heartbeatSignal, { connection_id: this.connectionId }).catch((err: Error) =>
        log.warn({ err: err.message, cause: (err.cause as Error | undefined)?.message, session: id }, 'heartbeat signal failed'),
      );
    }, this.deps.heartbeatIntervalS * 1000);
  }

  /** The session's idle timeout, if its stack or account has one (portal/idle-timeout.ts), counted from now. */
  private async startIdleTimer() {
    const { db, client, log } = this.deps;
    const id = this.sessionId;
    const limit = await idleLimitOf(db, id);
    if (!limit || this.channelClosed) return;
    this.idle = new IdleTimer(limit, {
      warn: (line) => this.say(line, { ownLine: true }),
      idle: (message) => {
        log.info({ session: id, idle_timeout_s: limit.seconds }, 'idle timeout: asking the workflow to end the session');
        client.workflow.getHandle(sessionWorkflowId(id)).signal(idleTimeoutSignal, { connection_id: this.connectionId, message })
          .catch((err: Error) => log.warn({ err: err.message, session: id }, 'idleTimeout signal failed'));
      },
    });
  }

  private stopHeartbeats() {
    clearInterval(this.beat);
    this.beat = undefined;
  }

  private async disconnected(reason: string) {
    if (!this.heartbeatSent) return;
    await this.deps.client.workflow
      .getHandle(sessionWorkflowId(this.sessionId))
      .signal(clientDisconnectedSignal, { connection_id: this.connectionId, reason })
      .catch((err) => this.deps.log.warn({ err: (err as Error).message, session: this.sessionId }, 'clientDisconnected signal failed'));
  }
}
