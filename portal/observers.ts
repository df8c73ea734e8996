import type { ServerChannel } from 'ssh2';
import type { Db } from '../lib/db.js';
import type { Logger } from '../lib/log.js';
import { observerText, type ObserverDetails, type OutputStream } from '../journal/format.js';
import { catchUp, readOutputTail } from '../journal/output-tail.js';
import { journalPath } from '../journal/writer.js';
import { principalForUser } from '../services/auth.js';
import { ApiError } from '../services/errors.js';
import { portalAddress } from '../services/placement.js';
import type { SessionsService } from '../services/sessions.js';
import type { PortalCredential } from './auth.js';

/** What an observer is shown of the output printed before it joined: enough for a screen or two, with its escape sequences. */
const TAIL_BYTES = 16 * 1024;
/**
 * An observer whose connection holds more unsent output than this is let go: the session's client
 * never waits for an observer, and an observer that cannot keep up would otherwise grow the portal.
 */
const MAX_BEHIND_BYTES = 4 * 1024 * 1024;
const CTRL_C = 0x03;

/** The attached client of a session, as its observers need it (portal/attachment.ts). */
export interface WatchedClient {
  /** A line on the watched user's terminal, from the portal (never typed into the program). */
  tell(line: string): void;
  /** Appends an observer record to the session's journal; false when it could not (the session is over). */
  record(details: ObserverDetails): boolean;
  /** The client's terminal size, if it has a terminal. */
  size(): { cols: number; rows: number } | null;
}

/**
 * Where an observer's view goes: an SSH channel (`watch-<id>`), or the console's live player (an
 * event stream of the API: api/routes/live.ts). Writes never wait.
 */
export interface ObserverSink {
  /** Output as the watched client got it. */
  send(stream: OutputStream, chunk: Buffer): void;
  /** A line from essh, on a line of its own. */
  say(line: string): void;
  /** The last line; then watching has ended (an SSH observer's status is 0). */
  end(line: string): void;
  /** Whether the observer's side has gone. */
  readonly gone: boolean;
  /** Bytes the sink holds that its observer has not taken yet. */
  readonly backlog: number;
}

/** One observer: output goes to its sink without waiting, and it is let go with a last line. */
class Observer {
  readonly joinedAt = Date.now();
  private done = false;

  constructor(readonly details: Omit<ObserverDetails, 'event' | 'duration_s'>, private readonly sink: ObserverSink) {}

  get gone(): boolean {
    return this.done || this.sink.gone;
  }

  send(stream: OutputStream, chunk: Buffer) {
    if (this.gone) return;
    if (this.sink.backlog > MAX_BEHIND_BYTES) {
      this.finish(`essh: stopped watching: this connection fell more than ${MAX_BEHIND_BYTES / 1024 / 1024} MB behind the session's output; watch again to catch up.`);
      return;
    }
    this.sink.send(stream, chunk);
  }

  say(line: string) {
    if (!this.gone) this.sink.say(line);
  }

  finish(line: string) {
    if (this.gone) return;
    this.done = true;
    this.sink.end(line);
  }
}

/** An SSH channel as an observer's sink: output to its stdout or stderr, essh's lines to stderr, then status 0. */
function channelSink(channel: ServerChannel, tty: boolean): ObserverSink {
  const nl = tty ? '\r\n' : '\n';
  const say = (line: string) => {
    if (channel.stderr.writable) channel.stderr.write(`${tty ? nl : ''}${line}${nl}`);
  };
  return {
    send: (stream, chunk) => void (stream === 'stderr' ? channel.stderr : channel).write(chunk),
    say,
    end: (line) => {
      say(line);
      channel.exit(0);
      channel.end();
    },
    get gone() {
      return channel.destroyed;
    },
    get backlog() {
      return channel.writableLength;
    },
  };
}

/**
 * The observers of one session whose client this portal process serves: the attachment publishes each
 * chunk of output as soon as it is journaled, and each observer gets it without holding up the client.
 * Joining and leaving are told to the watched user and journaled (the drains' `session_observed`).
 */
export class Audience {
  private readonly observers = new Set<Observer>();
  private closedWith: string | null = null;

  constructor(readonly sessionId: number, private readonly client: WatchedClient, private readonly onClose: () => void) {}

  get closed(): string | null {
    return this.closedWith;
  }

  get size(): number {
    return this.observers.size;
  }

  clientSize() {
    return this.client.size();
  }

  publish(stream: OutputStream, chunk: Buffer) {
    for (const o of this.observers) o.send(stream, chunk);
  }

  join(o: Observer) {
    this.observers.add(o);
    this.announce({ ...o.details, event: 'joined' });
  }

  leave(o: Observer) {
    if (!this.observers.delete(o)) return;
    this.announce({ ...o.details, event: 'left', duration_s: Number(((Date.now() - o.joinedAt) / 1000).toFixed(3)) });
  }

  /**
   * The session's client is let go (its program exited, it disconnected, the session ended elsewhere):
   * each observer gets `line` and its connection ends, its leaving journaled while the journal is open.
   */
  close(line: string) {
    if (this.closedWith !== null) return;
    this.closedWith = line;
    for (const o of [...this.observers]) {
      this.leave(o);
      o.finish(line);
    }
    this.onClose();
  }

  private announce(details: ObserverDetails) {
    this.client.record(details);
    this.client.tell(observerText(details));
  }
}

/** The audiences of the sessions whose clients this portal process serves, by session id. */
export class Audiences {
  private readonly live = new Map<number, Audience>();

  open(sessionId: number, client: WatchedClient): Audience {
    const audience = new Audience(sessionId, client, () => {
      if (this.live.get(sessionId) === audience) this.live.delete(sessionId);
    });
    this.live.set(sessionId, audience);
    return audience;
  }

  of(sessionId: number): Audience | undefined {
    return this.live.get(sessionId);
  }

  /** Observers watching sessions through this process (for /metrics and tests). */
  get observers(): number {
    let n = 0;
    for (const a of this.live.values()) n += a.size;
    return n;
  }
}

export interface ObserverDeps {
  db: Db;
  sessions: SessionsService;
  audiences: Audiences;
  dataDir: string;
  log: Logger;
  /** The stack host this portal runs on, if any: a session of another host is watched through that host's portal. */
  hostId?: string;
}

/** Who wants to watch which session, from where, and where their view goes. */
export interface WatchRequest {
  sessionId: number;
  userId: number;
  credential: ObserverDetails['credential'];
  /** The observer's address (its connection's peer). */
  address: string;
  sink: ObserverSink;
  /** How the observer stops watching, for the banner. */
  howToStop: string;
}

/**
 * Starts one observer: its right to watch (SessionsService.watchable: the session's owner, an admin
 * of its account, an operator; the session live; an ApiError saying why not), the session's client
 * served by this process (else `refused`, saying where it is), then the tail of what the session
 * printed so far and its output live until the session's client is let go or `leave` is called.
 */
export async function startWatching(deps: ObserverDeps, req: WatchRequest): Promise<{ refused: string } | { leave: (line: string) => void }> {
  const id = req.sessionId;
  const principal = await principalForUser(deps.db, req.userId);
  if (!principal) return { refused: 'essh: the user this connection logged in as no longer exists.' };
  const { row, role } = await deps.sessions.watchable(principal, id);
  const audience = deps.audiences.of(id);
  if (!audience) return { refused: await notServedHere(deps, id, row.host_id, row.state) };

  const file = journalPath(deps.dataDir, id);
  const read = await readOutputTail(file, TAIL_BYTES);
  if (audience.closed !== null) return { refused: audience.closed };
  const observer = new Observer({
    user: { id: principal.id, name: principal.name, email: principal.email }, role, address: req.address,
    credential: req.credential, joined_at: new Date().toISOString(),
  }, req.sink);
  if (observer.gone) return { leave: () => undefined };
  const size = audience.clientSize();
  observer.say(`essh: watching session ${id} read-only${size ? ` (its terminal is ${size.cols}x${size.rows})` : ''}; ` +
    `what you type goes nowhere. ${req.howToStop}`);
  // The tail up to this moment and the live output from it, in one synchronous step: nothing is
  // printed twice and nothing is missed in between.
  const tail = catchUp(file, read);
  for (const piece of tail.pieces) observer.send(piece.stream, piece.data);
  audience.join(observer);
  deps.log.info({ session: id, observer: principal.id, role }, 'observer joined');
  let left = false;
  return {
    leave: (line) => {
      if (left) return;
      left = true;
      audience.leave(observer);
      observer.finish(line);
      deps.log.info({ session: id, observer: principal.id }, 'observer left');
    },
  };
}

export interface ObserverRequest {
  sessionId: number;
  userId: number;
  credential: PortalCredential;
  /** The observer's address (its SSH connection's peer). */
  address: string;
  channel: ServerChannel;
  tty: boolean;
  /** An exec request's command: an observer runs nothing, so it is refused. */
  command: string | null;
}

/**
 * Serves one `watch-<id>` channel (startWatching). What the observer types is read and dropped: it
 * never reaches the program; Ctrl-C on a terminal, or closing the connection, stops watching.
 * Resolves once the observer's channel is done with.
 */
export async function serveObserver(deps: ObserverDeps, req: ObserverRequest): Promise<void> {
  const id = req.sessionId;
  const nl = req.tty ? '\r\n' : '\n';
  const refuse = (line: string) => {
    if (req.channel.stderr.writable) req.channel.stderr.write(line + nl);
    req.channel.exit(1);
    req.channel.end();
  };
  let ctrlC = false;
  let leave: (line: string) => void = () => undefined;
  const stop = () => leave(`essh: stopped watching session ${id}.`);
  // Typed keys are read and dropped (never to the program); Ctrl-C on a terminal leaves.
  req.channel.on('data', (chunk: Buffer) => {
    if (!req.tty || !chunk.includes(CTRL_C)) return;
    ctrlC = true;
    stop();
  });
  const closed = new Promise<void>((resolve) => req.channel.once('close', resolve));
  if (req.command !== null) return refuse(`essh: watch-${id} runs no command: connect without one to watch session ${id}.`);
  let watching;
  try {
    watching = await startWatching(deps, {
      sessionId: id, userId: req.userId, credential: req.credential.kind, address: req.address, sink: channelSink(req.channel, req.tty),
      howToStop: req.tty ? 'Ctrl-C stops watching.' : 'Close the connection to stop watching.',
    });
  } catch (err) {
    if (err instanceof ApiError) return refuse(`essh: ${err.message}`);
    throw err;
  }
  if ('refused' in watching) return refuse(watching.refused);
  leave = watching.leave;
  if (ctrlC) stop();
  await closed;
  // The connection went without a Ctrl-C (the line is for nobody).
  stop();
}

/** Why a live session's output is not to be had from this process, and where it is. */
async function notServedHere(deps: ObserverDeps, id: number, hostId: string | null, state: string): Promise<string> {
  if (state !== 'active') return `essh: session ${id} has no client attached yet (it is ${state.replace(/_/g, ' ')}); watch it once its client is attached.`;
  if (hostId && deps.hostId && hostId !== deps.hostId) {
    const host = await deps.db.selectFrom('hosts').selectAll().where('host_id', '=', hostId).executeTakeFirst();
    const where = host?.ssh_host && host.ssh_port ? `: ssh -t -p ${host.ssh_port} watch-${id}@${host.ssh_host}` : '';
    return `essh: session ${id} runs on host ${hostId}, not on this portal's host; watch it through its host's portal (${host ? portalAddress(host) : `host ${hostId}`})${where}, or with essh watch ${id}.`;
  }
  return `essh: session ${id}'s client is attached through another portal process than this one (an upgrade may be handing clients over); ` +
    `watch it again in a moment, or with essh watch ${id}.`;
}
