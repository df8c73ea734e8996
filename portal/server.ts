import net, { type AddressInfo } from 'node:net';
import type { Client as TemporalClient } from '@temporalio/client';
import type Docker from 'dockerode';
import ssh2, { type Connection, type ServerChannel } from 'ssh2';
import type { Config } from '../lib/config.js';
import type { Db } from '../lib/db.js';
import type { Logger } from '../lib/log.js';
import { PeriodicPass } from '../lib/periodic.js';
import { principalForUser } from '../services/auth.js';
import { ApiError } from '../services/errors.js';
import type { SessionsService } from '../services/sessions.js';
import { Attachment, newPortalInstance, type ConnectionTiming, type PortalInstance, type PtySize } from './attachment.js';
import { PortalAuthenticator, type PortalIdentity } from './auth.js';
import { AttachedNotes } from './attached-notes.js';
import { ReattachWindow } from './reattach-window.js';
import { type Admission, DEFAULT_PORTAL_LIMITS, PortalGuard, type PortalRefusal } from './guard.js';
import { loadOrCreateHostKey } from '../lib/ssh-host-key.js';
import { OPEN_FAILURE, refuseChannel, serveForward } from './forward.js';
import { runningContainer } from './running-container.js';
import { appAllowsFileTransfer, fileTransferOff, serveSftp } from './sftp.js';
import { Audiences, serveObserver } from './observers.js';
import { DEFAULT_OUTPUT_PACING, OutputPacing } from './output-pacing.js';
import { hostProcesses, listenAfterPredecessor } from '../lib/handover.js';
import type { PortalFigures } from '../host/metrics.js';


/** A channel's request for the `sftp` subsystem, where others carry a command line (exec) or none (shell). */
const SFTP = Symbol('sftp');
/** How long a connection stays without a channel before it counts against its user's idle cap (portal/guard.ts). */
const IDLE_CAP_GRACE_MS = 5_000;
/** What OpenSSH's scp runs on the far side in its legacy mode (`scp -O`): `scp -t PATH` (to) or `scp -f PATH` (from). */
const LEGACY_SCP = /^\s*scp(\s+-\S+)*\s+-[a-zA-Z]*[tf](\s|$)/;

export interface PortalDeps {
  config: Config;
  db: Db;
  sessions: SessionsService;
  client: TemporalClient;
  docker: Docker;
  log: Logger;
  /**
   * The stack host this portal runs on (its config.hostId), if it runs on one: a client whose
   * connection went with an earlier start of this host's process may then reattach (attachment.ts).
   */
  hostId?: string;
}

/**
 * The SSH portal (CONTRACT §4): `session-<id>` attaches to a session, `<app>` creates one and attaches.
 * It never logs tokens or anything that passes through a session.
 */
export class SshPortal {
  private server?: net.Server;
  private readonly connections = new Set<Connection>();
  private readonly claims = new Set<number>();
  /** Channels being served; stop() lets them tell their workflows before the runtime closes the database. */
  private readonly serving = new Set<Promise<void>>();
  private readonly attachments = new Set<Attachment>();
  /** Who watches the sessions whose clients this process serves (`watch-<id>`). */
  readonly audiences = new Audiences();
  /** One for all of this process's sessions: a keystroke in any of them holds the bulk output of all. */
  readonly pacing: OutputPacing;
  private readonly auth: PortalAuthenticator;
  private readonly guard: PortalGuard;
  private readonly notes: AttachedNotes;
  private readonly notesSweep: PeriodicPass<number>;
  private readonly reattachWindow: ReattachWindow;
  /** Sockets the guard let in, by remote address and port, until ssh2 hands over their connection. */
  private readonly admitted = new Map<string, { admission: Admission; authenticated: () => void }>();
  private readonly instance: PortalInstance;
  /** Set once the listener is closing (an upgrade's drain: `stopAccepting`). */
  private listenerClosed?: Promise<void>;
  port = 0;

  constructor(private readonly deps: PortalDeps) {
    // A stack host's portal marks itself among the host's processes: an upgrade's successor tells its
    // live connections from a crashed predecessor's dead ones (lib/handover.ts).
    const processes = deps.hostId ? hostProcesses(deps.config.dataDir) : undefined;
    this.instance = newPortalInstance(deps.hostId, processes && (() => new Set(processes.others().flatMap((m) => m.bootIds))));
    processes?.announce({ bootId: this.instance.bootId });
    this.notes = new AttachedNotes(deps.config.dataDir);
    this.reattachWindow = new ReattachWindow({
      client: deps.client, notes: this.notes, portal: this.instance, log: deps.log,
      heartbeatIntervalS: deps.config.ssh.heartbeatIntervalS, windowS: deps.config.ssh.reattachWindowS,
    });
    this.notesSweep = new PeriodicPass(() => this.notes.sweep(deps.db), { intervalS: 3600, log: deps.log, what: 'sweeping the notes of ended sessions\' clients' });
    this.auth = new PortalAuthenticator({ db: deps.db, sessions: deps.sessions });
    this.guard = new PortalGuard({ ...DEFAULT_PORTAL_LIMITS, ...deps.config.ssh.limits });
    const { interactiveMs } = deps.config.ssh;
    this.pacing = new OutputPacing({ ...DEFAULT_OUTPUT_PACING, interactiveMs, holdBurstMs: Math.max(DEFAULT_OUTPUT_PACING.holdBurstMs, interactiveMs) });
  }

  async start(): Promise<void> {
    const { config, log } = this.deps;
    if (config.ssh.heartbeatIntervalS >= config.session.heartbeatTimeoutS) {
      throw new Error(
        `ESSH_PORTAL_HEARTBEAT_S (${config.ssh.heartbeatIntervalS}) must be shorter than ESSH_HEARTBEAT_TIMEOUT_S ` +
          `(${config.session.heartbeatTimeoutS}), or every attached session would end for want of heartbeats.`,
      );
    }
    const hostKey = await loadOrCreateHostKey(config.dataDir);
    // Notes a crashed predecessor left for sessions that ended while no portal ran.
    await this.notesSweep.runOnce();
    this.notesSweep.start();
    const ssh = new ssh2.Server({ hostKeys: [hostKey], ident: 'essh' }, (conn, info) => this.onConnection(conn, info));
    // Connections are admitted before ssh2 sees them (portal/guard.ts): one refused costs a closed
    // socket, not a key exchange.
    const server = net.createServer((socket) => this.onSocket(socket, ssh));
    await listenAfterPredecessor(server, {
      host: config.ssh.host, port: config.ssh.port, dataDir: this.deps.hostId ? config.dataDir : undefined,
      waitS: config.upgrade.bindWaitS, log, what: 'the SSH portal',
    });
    server.on('error', (err: Error) => log.error({ err }, 'SSH portal server error'));
    // While the clients of a crashed predecessor come back through the socket just opened.
    void this.reattachWindow.open().catch((err) => log.warn({ err }, 'opening the reattach window failed'));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    if (this.deps.hostId) hostProcesses(config.dataDir).announce({ port: this.port });
  }

  /**
   * An upgrade's first step here: the listener closes (the successor takes the port) and no client is
   * let go; `drained` resolves once the last connection has ended.
   */
  stopAccepting(): void {
    const server = this.server;
    if (!server || this.listenerClosed) return;
    this.listenerClosed = new Promise<void>((r) => server.close(() => r()));
    this.reattachWindow.stop();
  }

  /** Whether every connection ended within `ms` (the drain deadline). */
  async drained(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.connections.size > 0 || this.serving.size > 0 || this.guard.openConnections > 0) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - Date.now()))));
    }
    return true;
  }

  /** Open connections (admitted, authenticated or not) and those still authenticating, and channels attached to a session: for /metrics. */
  figures(): PortalFigures<PortalRefusal> {
    return {
      connections: this.guard.openConnections, unauthenticated: this.guard.unauthenticatedConnections, attachments: this.attachments.size,
      refused: { ...this.guard.refusals }, reattachWaiting: this.reattachWindow.size,
    };
  }

  /** What each open channel has read from its container, and how long its output waited while others typed (for tests and diagnostics). */
  attachmentStats(): { sessionId: number; bytesFromContainer: number; holds: number; heldMs: number }[] {
    return [...this.attachments].map((a) => ({ sessionId: a.sessionId, bytesFromContainer: a.bytesFromContainer, holds: a.pace.holds, heldMs: a.pace.heldMs }));
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await this.notesSweep.stop();
    this.reattachWindow.stop();
    const closed = this.listenerClosed ?? new Promise<void>((r) => server.close(() => r()));
    for (const conn of this.connections) conn.end();
    await Promise.race([Promise.all([closed, ...this.serving]), new Promise((r) => setTimeout(r, 5000))]);
  }

  private onSocket(socket: net.Socket, ssh: ssh2.Server) {
    const address = socket.remoteAddress ?? '';
    const guard = this.guard;
    const admission = guard.admit(address, () => socket.destroy());
    if (!admission) {
      socket.destroy();
      return;
    }
    const key = `${address}:${socket.remotePort}`;
    // A connection that never finishes authenticating (or never even says hello) is dropped.
    const authDeadline = setTimeout(() => socket.destroy(), guard.limits.authTimeoutS * 1000);
    authDeadline.unref();
    this.admitted.set(key, {
      admission,
      authenticated: () => {
        clearTimeout(authDeadline);
        guard.authenticated(admission);
      },
    });
    socket.once('close', () => {
      clearTimeout(authDeadline);
      this.admitted.delete(key);
      guard.closed(admission);
    });
    ssh.injectSocket(socket);
  }

  private onConnection(conn: Connection, info: { ip: string; port: number }) {
    const { log } = this.deps;
    const guard = this.guard;
    const address = info.ip;
    const admitted = this.admitted.get(`${info.ip}:${info.port}`);
    this.connections.add(conn);
    let attempts = 0;
    /** The key last offered without a signature: its signed attempt is the same attempt. */
    let offered: Buffer | null = null;
    /** Keys this connection offered, each charged to its address until one logs it in. */
    let offers = 0;
    // Without TCP_NODELAY each small handshake reply waits out the peer's delayed ACK (about 40 ms,
    // twice before the shell opens) and keystroke echoes are held back the same way, as OpenSSH knows.
    // (@types/ssh2 lacks the server side's setNoDelay, which ssh2 has.)
    (conn as Connection & { setNoDelay(noDelay: boolean): void }).setNoDelay(true);
    let identity: PortalIdentity | null = null;
    conn.on('authentication', (ctx) => {
      const methods = this.auth.methodsFor(ctx.username);
      // `none` asks which methods there are: not an attempt. A key offered without a signature is one
      // (and charged to the address until a key logs in), or anyone could ask key after key which
      // sessions a public key owns; its signed attempt that follows is the same attempt.
      const probe = ctx.method === 'publickey' && !ctx.signature;
      const signedOffer = ctx.method === 'publickey' && !!ctx.signature && offered !== null && offered.equals(ctx.key.data);
      offered = probe ? ctx.key.data : null;
      const attempt = ctx.method !== 'none' && !signedOffer;
      if (attempt && ++attempts > guard.limits.maxAuthAttempts) {
        ctx.reject();
        conn.end();
        return;
      }
      const refuse = () => {
        ctx.reject(methods);
        if (attempt) void guard.failed(address).then((allowed) => allowed || conn.end());
      };
      if (guard.isBlocked(address)) return refuse();
      if (probe) {
        if (!this.auth.wouldConsider(ctx)) return refuse();
        offers++;
        void guard.failed(address).then((allowed) => {
          if (allowed) return ctx.accept();
          ctx.reject(methods);
          conn.end();
        });
        return;
      }
      this.auth.decide(ctx).then(
        (who) => {
          if (!who) return refuse();
          identity = who;
          void guard.forgive(address, offers);
          ctx.accept();
        },
        (err) => {
          log.warn({ err: (err as Error).message }, 'portal authentication check failed');
          refuse();
        },
      );
    });

    conn.on('ready', () => {
      admitted?.authenticated();
      const timing: ConnectionTiming = { admittedAt: admitted?.admission.admittedAt ?? Date.now(), authenticatedAt: Date.now() };
      const who = identity!;
      // A connection with no channel open for the idle timeout is closed (a ControlMaster left behind,
      // a client that authenticated and went quiet): keepalives do not count, a channel does.
      let channels = 0;
      let idleTimer: NodeJS.Timeout | undefined;
      const idleFromNow = () => {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => {
          if (channels === 0) conn.end();
        }, guard.limits.idleTimeoutS * 1000);
        idleTimer.unref();
      };
      // Idle connections also count against the user's cap, which closes the user's longest-idle one,
      // once they have stayed without a channel a moment: a user's burst of parallel `ssh APP@host cmd`
      // authenticates each connection before it opens its channel, and on a loaded host more than the
      // cap were counted idle in that gap, so one of them was closed on its way to run its command.
      let capTimer: NodeJS.Timeout | undefined;
      const nowIdle = () => {
        idleFromNow();
        clearTimeout(capTimer);
        capTimer = setTimeout(() => {
          if (channels === 0) guard.idle(who.userId, conn, () => conn.end());
        }, IDLE_CAP_GRACE_MS);
        capTimer.unref();
      };
      const nowBusy = () => {
        channels++;
        clearTimeout(idleTimer);
        clearTimeout(capTimer);
        guard.busy(who.userId, conn);
      };
      nowIdle();
      conn.once('close', () => {
        clearTimeout(idleTimer);
        clearTimeout(capTimer);
        guard.busy(who.userId, conn);
      });
      /** The session an `<app>` login's last shell created: where its `ssh -L` forwards go. */
      let appSession: number | null = null;
      // `ssh -L`: a TCP connection from inside the session's container (portal/forward.ts). `-R` (the
      // tcpip-forward global request) has no listener here, so ssh2 refuses it.
      conn.on('tcpip', (accept, reject, info) => {
        const refuse = (reason: number, description: string) => refuseChannel(conn, reject, reason, description);
        if (who.kind === 'watch') {
          return refuse(OPEN_FAILURE.administrativelyProhibited, `essh: watch-${who.sessionId} only watches; forward ports on the session's own connection`);
        }
        const sessionId = who.kind === 'session' ? who.sessionId : appSession;
        if (sessionId === null) {
          return refuse(OPEN_FAILURE.administrativelyProhibited,
            'essh: this connection has no session yet: forward once its shell is up (ssh -L without -N), or log in as session-<id>');
        }
        nowBusy();
        const served = (async () => {
          const revoked = await this.auth.stillValid(who);
          if (revoked) return refuse(OPEN_FAILURE.administrativelyProhibited, revoked);
          const { config } = this.deps;
          await serveForward(
            { db: this.deps.db, docker: this.deps.docker, dataDir: config.dataDir, journalMaxBytes: config.journalMaxBytes, log },
            { sessionId, userId: who.userId, info, accept, refuse },
          );
        })().catch((err) => log.warn({ err: (err as Error).message }, 'port forward failed'))
          .finally(() => {
            if (--channels === 0) nowIdle();
          });
        this.serving.add(served);
        void served.finally(() => this.serving.delete(served));
      });
      // Each session channel of a connection is a client of its own (OpenSSH's ControlMaster opens
      // one per `ssh` run): for `<app>` logins each creates a session; for `session-<id>` the one
      // client per session rule still holds.
      conn.on('session', (accept) => {
        const session = accept();
        nowBusy();
        session.once('close', () => {
          if (--channels === 0) nowIdle();
        });
        let pty: (PtySize & { term: string }) | null = null;
        let attachment: Attachment | null = null;
        session.on('pty', (ok, _no, info) => {
          pty = { rows: info.rows, cols: info.cols, term: info.term };
          ok?.();
        });
        session.on('window-change', (ok, _no, info) => {
          const size = { rows: info.rows, cols: info.cols };
          if (attachment) attachment.resize(size);
          else if (pty) Object.assign(pty, size);
          ok?.();
        });
        session.on('env', (_ok, no) => no?.());
        const begin = (channel: ServerChannel, command: string | null | typeof SFTP) => {
          const served = this.serve(who, channel, pty, command, timing, address, (a) => {
            attachment = a;
            if (who.kind === 'app') appSession = a.sessionId;
            this.attachments.add(a);
            channel.once('close', () => this.attachments.delete(a));
          }).catch((err) =>
            log.warn({ err: (err as Error).message }, 'portal channel failed'),
          );
          this.serving.add(served);
          void served.finally(() => this.serving.delete(served));
        };
        session.once('shell', (ok) => begin(ok(), null));
        session.once('exec', (ok, _no, info) => begin(ok(), info.command));
        // scp (in its SFTP mode, the default) and sftp: OpenSSH's sftp-server in the session's container (portal/sftp.ts).
        session.once('subsystem', (ok, no, info) => (info.name === 'sftp' ? begin(ok(), SFTP) : no?.()));
      });
    });
    conn.on('error', (err) => log.debug({ err: err.message }, 'SSH client connection error'));
    conn.on('close', () => {
      this.connections.delete(conn);
    });
  }

  private async serve(
    who: PortalIdentity,
    channel: ServerChannel,
    pty: (PtySize & { term: string }) | null,
    command: string | null | typeof SFTP,
    timing: ConnectionTiming,
    address: string,
    onAttachment: (a: Attachment) => void,
  ) {
    const { config } = this.deps;
    const deps = {
      db: this.deps.db, docker: this.deps.docker, client: this.deps.client, heartbeatIntervalS: config.ssh.heartbeatIntervalS,
      dataDir: config.dataDir, journalMaxBytes: config.journalMaxBytes, log: this.deps.log, claims: this.claims, portal: this.instance,
      notes: this.notes, extraEnv: (id: number) => this.deps.sessions.extraEnv(id), audiences: this.audiences,
      pacing: this.pacing,
    };
    // A key removed, a token expired or revoked, a user gone since the connection logged in: no new
    // session through it (the channels already open go on, as with sshd; ending a session is terminate's job).
    const revoked = await this.auth.stillValid(who);
    if (revoked) return new Attachment(deps, 0, channel, pty).fail(revoked);
    if (who.kind === 'watch') {
      return serveObserver(
        { db: this.deps.db, sessions: this.deps.sessions, audiences: this.audiences, dataDir: config.dataDir, log: this.deps.log, hostId: this.deps.hostId },
        // An observer copies no files: its SFTP is refused as a command is.
        { sessionId: who.sessionId, userId: who.userId, credential: who.credential, address, channel, tty: pty !== null, command: command === SFTP ? 'sftp' : command },
      );
    }
    if (typeof command === 'string' && LEGACY_SCP.test(command)) {
      return new Attachment(deps, 0, channel, pty).fail(
        'essh: legacy scp (scp -O, the old scp/rcp protocol) is not supported: use scp without -O (its SFTP mode, the default), sftp, or essh cp.',
      );
    }
    const sftpDeps = { db: this.deps.db, docker: this.deps.docker, dataDir: config.dataDir, journalMaxBytes: config.journalMaxBytes, log: this.deps.log };
    const serveSftpIn = (sessionId: number) => (containerId: string) => serveSftp(sftpDeps, { sessionId, containerId, userId: who.userId, channel });
    if (command === SFTP && who.kind === 'session') {
      // Files go to and from the session's container beside its program and its client, which it does
      // not replace: no claim, no heartbeats.
      const closer = new Attachment(deps, who.sessionId, channel, null);
      const running = await runningContainer(this.deps.db, who.sessionId);
      if ('refused' in running) return closer.fail(`${running.refused}: no files to copy`);
      if (!running.fileTransfer) return closer.fail(fileTransferOff(running.account));
      return closer.finish(await serveSftpIn(who.sessionId)(running.containerId));
    }
    if (command === SFTP && who.kind === 'app') {
      // Refused before a session is made for it.
      const app = await appAllowsFileTransfer(this.deps.db, who.app);
      if (app && !app.allowed) return new Attachment(deps, 0, channel, null).fail(fileTransferOff(app.account));
    }
    if (who.kind === 'session') {
      const attachment = new Attachment(deps, who.sessionId, channel, pty, timing);
      onAttachment(attachment);
      if (command !== null) {
        return attachment.fail(
          `essh: session ${who.sessionId} runs the command it was created with; connect without a command to attach to it.`,
        );
      }
      return attachment.run();
    }

    const principal = await principalForUser(this.deps.db, who.userId);
    const early = new Attachment(deps, 0, channel, pty);
    if (!principal) return early.fail('essh: this key belongs to no user any more.');
    let sessionId: number;
    try {
      const created = await this.deps.sessions.create(principal, who.app, {
        // Like sshd, the command line is handed to a shell.
        command: typeof command === 'string' ? ['/bin/sh', '-c', command] : undefined,
        // The client is connected here: its session must run on this host, or it is told which host to use.
      }, { onHost: this.deps.hostId });
      sessionId = created.id;
    } catch (err) {
      if (err instanceof ApiError) return early.fail(`essh: ${err.message}`);
      throw err;
    }
    const attachment = new Attachment(deps, sessionId, channel, pty, timing);
    onAttachment(attachment);
    await attachment.run({
      progress: pty !== null,
      // scp or sftp to `<app>`: a session of its own, the SFTP server serving in place of its program; it ends with it.
      ...(command === SFTP ? { serve: serveSftpIn(sessionId) } : {}),
      // Nobody will attach to a session whose client left while it was provisioning.
      onLeftEarly: () =>
        this.deps.sessions.terminate(principal, sessionId, 'the SSH client left before the session was ready').catch(() => undefined),
    });
  }
}
