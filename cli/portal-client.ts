import { createConnection, type Socket } from 'node:net';
import type { AnyAuthMethod, AuthenticationType, AuthHandlerMiddleware, Client, ClientChannel, SFTPWrapper } from 'ssh2';

/**
 * ssh2 takes about 50 ms to load: the CLI loads it only for `essh ssh`, and starts that while its
 * API request is in flight.
 */
export const loadSshClient = () => import('ssh2').then((m) => m.default);

/** Where and as whom to attach: a session's `connect` block (CONTRACT §3). */
export interface PortalTarget {
  host: string;
  port: number;
  user: string;
  token: string;
  /** The portal's host key as the API announced it (`ssh-ed25519 AAAA…`); when given, nothing else is accepted. */
  host_key?: string;
  host_key_fingerprint?: string;
}

export interface PortalShellOptions {
  /** Ask for a PTY of this size (interactive use); none: plain stdin/stdout/stderr. */
  pty?: { rows: number; cols: number; term?: string } | null;
  readyTimeoutMs?: number;
  /**
   * The private key (OpenSSH or PEM text) of a key registered to the session's owner: authenticates with
   * it alone, not with the token. What a client that lost its connection reattaches with, since the
   * token works only once (CONTRACT §4).
   */
  privateKey?: string | Buffer;
  /** The local address to connect from (a benchmark's clients spread over 127.0.0.0/8 as many users' would). */
  localAddress?: string;
  /** A connection made while the API answered (EarlyPortalConnection): used if it goes to this same portal. */
  early?: EarlyPortalConnection | null;
}

/** The portal refused the credentials (token or key): trying again with the same ones will not help. */
export class PortalRefusedError extends Error {}

export interface PortalShell {
  client: Client;
  channel: ClientChannel;
  /** The remote exit status once the channel closes (null if the portal sent none). */
  exitCode: Promise<number | null>;
  /** Closes the connection (idempotent). */
  close(): void;
  /** When the connection reached each phase, the channel's opening aside. */
  phases: PortalPhases;
}

/**
 * Opens the session's shell through the portal with the ssh2 client, authenticating with the one-time
 * token (as a password, or keyboard-interactive for portals that ask that way), or with the owner's key
 * (`privateKey`). Used by `essh ssh` and by anything that drives the portal programmatically (benchmarks).
 *
 * The portal must present the host key the API announced in the same `connect` block: the token goes
 * only to the portal the caller's authenticated API connection vouched for.
 */
export async function openPortalShell(target: PortalTarget, opts: PortalShellOptions = {}): Promise<PortalShell> {
  return connectPortal(target, opts, 'the shell opened', (client, phases, resolve, fail) => {
    const pty = opts.pty ? { rows: opts.pty.rows, cols: opts.pty.cols, term: opts.pty.term ?? 'xterm-256color', height: 0, width: 0 } : false;
    client.shell(pty, (err, channel) => {
      if (err) return fail(err);
      const exitCode = new Promise<number | null>((done) => {
        let code: number | null = null;
        channel.on('exit', (c: number | null) => {
          if (typeof c === 'number') code = c;
        });
        channel.once('close', () => done(code));
      });
      resolve({ client, channel, exitCode, close: () => client.end(), phases });
    });
  });
}

/** Opens the session's SFTP through the portal (`essh cp`), authenticating as openPortalShell does. */
export async function openPortalSftp(target: PortalTarget, opts: Pick<PortalShellOptions, 'readyTimeoutMs' | 'privateKey' | 'early'> = {}): Promise<{ sftp: SFTPWrapper; close(): void }> {
  return connectPortal(target, opts, 'the SFTP session opened', (client, _phases, resolve, fail) => {
    client.sftp((err, sftp) => (err ? fail(err) : resolve({ sftp, close: () => client.end() })));
  });
}

/** performance.now() stamps of a portal connection's phases, for benchmarks. */
export interface PortalPhases {
  /** The TCP connection was asked for. */
  dialed: number;
  /** The key exchange was done and the portal's host key checked: the connection waited for credentials. */
  handshake?: number;
  /** The portal accepted the credentials. */
  authenticated?: number;
  /** Whether the connection was made early, to the portal remembered from the last session (EarlyPortalConnection). */
  early: boolean;
}

/** Where a portal listens and the host key it must prove: what the CLI remembers of a `connect` block (cli/portal-memory.ts). */
export interface PortalAddress {
  host: string;
  port: number;
  host_key: string;
}

/** The key a portal presents in its key exchange, from its `ssh-ed25519 AAAA… [comment]` line. */
function hostKeyBlob(line: string): Buffer {
  return Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
}

/** Whether a `connect` block names the portal at `address`: the same host, port and host key. */
export function isSamePortal(address: PortalAddress, target: { host: string; port: number; host_key?: string }): boolean {
  if (address.host !== target.host || address.port !== target.port || !target.host_key) return false;
  const remembered = hostKeyBlob(address.host_key);
  return remembered.length > 0 && remembered.equals(hostKeyBlob(target.host_key));
}

type Ssh2 = Awaited<ReturnType<typeof loadSshClient>>;

/**
 * One SSH connection to a portal whose authentication waits for `authenticate`: the key exchange, and
 * the check of the portal's host key, run as soon as it is made; the user name and the credentials go
 * out only once given, and only on a connection whose host key matched (ssh2 asks its `authHandler`
 * for credentials only after verifying the key). The deadline (ssh2's readyTimeout, replaced) does not
 * run while the connection waits for credentials: that wait is the API's, not the portal's.
 */
class PortalDial {
  readonly client: Client;
  readonly phases: PortalPhases;
  private failure: Error | 'closed' | null = null;
  private onFailure: ((failure: Error | 'closed') => void) | null = null;
  private attempts: AnyAuthMethod[] | null = null;
  private resumeAuthentication: (() => void) | null = null;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    ssh2: Ssh2,
    readonly address: { host: string; port: number; host_key?: string },
    opts: { timeoutMs: number; localAddress?: string; early?: { sock: Socket; dialedAt: number } },
  ) {
    this.phases = { dialed: opts.early?.dialedAt ?? performance.now(), early: !!opts.early };
    const expectedKey = address.host_key ? hostKeyBlob(address.host_key) : null;
    const client = (this.client = new ssh2.Client());
    // `on`, not `once`: a connection that breaks later (the portal killed) may say so more than once,
    // and an error without a listener would bring the whole process down.
    client.on('error', (err) => this.fail(err));
    // A connection closed before the channel opened (the portal stopping, an authentication deadline)
    // may come without an error: without this the caller would wait forever.
    client.once('close', () => this.fail('closed'));
    client.once('ready', () => {
      this.phases.authenticated = performance.now();
      clearTimeout(this.deadline);
    });
    this.arm(opts.timeoutMs);
    client.connect({
      host: address.host,
      port: address.port,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      ...(opts.early ? { sock: opts.early.sock } : {}),
      // Never sent: each attempt names its user, known only once the API has answered.
      username: '',
      readyTimeout: 0,
      hostVerifier: (presented: Buffer) => expectedKey === null || presented.equals(expectedKey),
      // ssh2 calls it once the host key is verified, and again after each refusal; `false` gives up.
      // (@types/ssh2 knows neither the null of the first call nor `false`, both of which ssh2 passes and takes.)
      authHandler: ((methodsLeft: AuthenticationType[] | null, _partialSuccess: boolean, next: (attempt: AnyAuthMethod | false) => void) => {
        this.phases.handshake ??= performance.now();
        if (this.attempts) return next(this.nextAttempt(methodsLeft));
        clearTimeout(this.deadline);
        this.resumeAuthentication = () => next(this.nextAttempt(methodsLeft));
      }) as unknown as AuthHandlerMiddleware,
    });
    // The portal's side does the same: small interactive packets must not wait for delayed ACKs.
    client.setNoDelay(true);
  }

  /**
   * Sends the credentials: the one-time token (as a password, then keyboard-interactive for portals
   * that ask that way), or the owner's key alone (a spent token offered first would count as a failed
   * attempt). `timeoutMs` bounds the rest of the way to the portal's acceptance.
   */
  authenticate(user: string, credentials: { token: string } | { privateKey: string | Buffer }, timeoutMs: number) {
    this.attempts = 'privateKey' in credentials
      ? [{ type: 'publickey', username: user, key: credentials.privateKey }]
      : [
          { type: 'password', username: user, password: credentials.token },
          { type: 'keyboard-interactive', username: user, prompt: (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => credentials.token)) },
        ];
    const resume = this.resumeAuthentication;
    if (!resume) return;
    this.resumeAuthentication = null;
    this.arm(timeoutMs);
    resume();
  }

  /** Calls `listener` with the connection's failure ('closed': closed without an error), now if it has failed already. */
  whenFailed(listener: (failure: Error | 'closed') => void) {
    this.onFailure = listener;
    if (this.failure) listener(this.failure);
  }

  get failed(): boolean {
    return this.failure !== null;
  }

  close() {
    clearTimeout(this.deadline);
    this.client.end();
  }

  private nextAttempt(methodsLeft: AuthenticationType[] | null): AnyAuthMethod | false {
    while (this.attempts?.length) {
      const attempt = this.attempts.shift()!;
      if (!methodsLeft || methodsLeft.includes(attempt.type)) return attempt;
    }
    return false;
  }

  private arm(timeoutMs: number) {
    clearTimeout(this.deadline);
    if (!(timeoutMs > 0)) return;
    this.deadline = setTimeout(() => {
      this.fail(new Error(`the SSH portal at ${this.address.host}:${this.address.port} did not let this client in within ${Math.round(timeoutMs / 1000)} s`));
      this.client.destroy();
    }, timeoutMs);
  }

  private fail(failure: Error | 'closed') {
    clearTimeout(this.deadline);
    if (this.failure) return;
    this.failure = failure;
    this.onFailure?.(failure);
  }
}

/**
 * How long an early connection may have waited for credentials and still be used: well within the
 * portal's own limit on connections that have not authenticated (ESSH_PORTAL_AUTH_TIMEOUT_S, 20 s by
 * default), past which it would close the connection as the credentials arrive. Older than this, a new
 * connection is made, as without one.
 */
const EARLY_CONNECTION_MAX_AGE_MS = 10_000;
/** How long an early connection may take to reach the point where it waits for credentials. */
const EARLY_HANDSHAKE_TIMEOUT_MS = 20_000;

/**
 * A connection to the portal the CLI used last (host, port and host key remembered per API), made while
 * the API is still creating the session: the TCP connection at once, the key exchange as soon as ssh2
 * is loaded, checking the remembered host key. Nothing is sent on it beyond the key exchange until
 * `openPortalShell`/`openPortalSftp` hand it the session's credentials, and only if the API's `connect`
 * block names this same host, port and host key; otherwise it is closed unused and a connection is made
 * as without it. Its failure at any point before authentication falls back the same way.
 */
export class EarlyPortalConnection {
  private readonly socket: Socket;
  private readonly dialing: Promise<PortalDial | null>;
  private closed = false;

  constructor(readonly address: PortalAddress) {
    const dialedAt = performance.now();
    // The TCP handshake (and the portal's version line) come in while ssh2 loads.
    const sock = (this.socket = createConnection({ host: address.host, port: address.port }));
    sock.setNoDelay(true);
    // A refused or broken connection is only a wrong guess: ssh2 takes the socket's errors over once it has it.
    sock.on('error', () => undefined);
    this.dialing = loadSshClient().then(
      (ssh2) => (this.closed || sock.destroyed ? null : new PortalDial(ssh2, address, { timeoutMs: EARLY_HANDSHAKE_TIMEOUT_MS, early: { sock, dialedAt } })),
      () => null,
    );
  }

  /**
   * The connection, for `target`'s credentials, if `target` names the same portal and the connection
   * is still good and young enough; otherwise null, and the connection is closed.
   */
  async claim(target: { host: string; port: number; host_key?: string }): Promise<PortalDial | null> {
    const dial = await this.dialing;
    if (dial && !dial.failed && !this.closed && isSamePortal(this.address, target) && performance.now() - dial.phases.dialed < EARLY_CONNECTION_MAX_AGE_MS) {
      this.closed = true;
      return dial;
    }
    this.close();
    return null;
  }

  /** Drops the connection unused (idempotent). */
  close() {
    if (this.closed) return;
    this.closed = true;
    void this.dialing.then((dial) => (dial ? dial.close() : this.socket.destroy()));
  }
}

/**
 * Connects and authenticates to the portal, checking its host key, then lets `open` open a channel:
 * resolves with what `open` resolves with, rejects with a sentence for a refusal or a connection lost
 * before `opened`. With `early`, its connection is used if it goes to the same portal; lost before
 * the portal accepted the credentials, a new connection is made as without it.
 */
async function connectPortal<T>(
  target: PortalTarget,
  opts: Pick<PortalShellOptions, 'readyTimeoutMs' | 'privateKey' | 'localAddress' | 'early'>,
  opened: string,
  open: OpenChannel<T>,
): Promise<T> {
  const ssh2 = await loadSshClient();
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  if (opts.privateKey !== undefined) {
    // A key ssh2 cannot read would otherwise be skipped without a word, and read as the portal's refusal.
    const parsed = ssh2.utils.parseKey(opts.privateKey);
    if (parsed instanceof Error) throw new Error(`cannot read the private key (${parsed.message})`);
  }
  const credentials = opts.privateKey !== undefined ? { privateKey: opts.privateKey } : { token: target.token };
  const early = await opts.early?.claim(target);
  if (early) {
    try {
      return await attach(early, target, credentials, timeoutMs, opened, open);
    } catch (err) {
      if (early.phases.authenticated !== undefined || err instanceof PortalRefusedError) throw err;
    }
  }
  const dial = new PortalDial(ssh2, target, { timeoutMs, localAddress: opts.localAddress });
  return attach(dial, target, credentials, timeoutMs, opened, open);
}

/** Opens the channel on an authenticated connection, then resolves with what is made of it. */
type OpenChannel<T> = (client: Client, phases: PortalPhases, resolve: (value: T) => void, fail: (err: Error) => void) => void;

function attach<T>(
  dial: PortalDial,
  target: PortalTarget,
  credentials: { token: string } | { privateKey: string | Buffer },
  timeoutMs: number,
  opened: string,
  open: OpenChannel<T>,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      dial.close();
      reject(err);
    };
    dial.whenFailed((failure) => fail(failure === 'closed'
      ? new Error(`the SSH portal at ${target.host}:${target.port} closed the connection before ${opened}`)
      : authMessage(failure, target, 'privateKey' in credentials)));
    dial.client.once('ready', () => open(dial.client, dial.phases, (value) => {
      settled = true;
      resolve(value);
    }, fail));
    dial.authenticate(target.user, credentials, timeoutMs);
  });
}

function authMessage(err: Error & { level?: string }, target: PortalTarget, withKey: boolean): Error {
  if (err.level === 'client-authentication') {
    return new PortalRefusedError(withKey
      ? `the portal refused the key for ${target.user} (it must be registered to the session's owner, and the session must not have ended)`
      : target.user.startsWith('watch-')
        ? `the portal refused the watch token for ${target.user} (it works once and expires after a few minutes); run essh watch again`
        : `the portal refused the session token for ${target.user} (it works once and expires after a few minutes); start a new session`);
  }
  if (/Host denied/.test(err.message)) {
    return new Error(
      `the SSH portal at ${target.host}:${target.port} presented a host key other than the essh API announced ` +
        `(${target.host_key_fingerprint ?? target.host_key}); not sending the session token. Something else may be answering ` +
        `at that address, or the portal's key changed without the API knowing (ESSH_PORTAL_HOST_KEY).`,
    );
  }
  if (err.level === 'client-socket' || (err as NodeJS.ErrnoException).code) {
    return new Error(`cannot reach the SSH portal at ${target.host}:${target.port} (${err.message})`);
  }
  return err;
}

/**
 * For programs that drive the portal (benchmarks): resolves once the shell's output so far matches
 * `pattern` (its prompt, say), with when the first byte and the match came, in ms from the call.
 */
export function waitForShellOutput(shell: PortalShell, pattern: RegExp, timeoutMs = 30_000) {
  const started = performance.now();
  return new Promise<{ firstByteMs: number; matchedMs: number; text: string }>((resolve, reject) => {
    let text = '';
    let firstByteMs = 0;
    const settle = (finish: () => void) => {
      clearTimeout(timer);
      shell.channel.off('data', onData);
      shell.channel.off('close', onClose);
      finish();
    };
    const onData = (chunk: Buffer) => {
      const now = performance.now() - started;
      if (!firstByteMs) firstByteMs = now;
      text += chunk.toString('latin1');
      if (pattern.test(text)) settle(() => resolve({ firstByteMs, matchedMs: now, text }));
    };
    const onClose = () => settle(() => reject(new Error(`the channel closed before its output matched ${pattern}`)));
    const timer = setTimeout(() => settle(() => reject(new Error(`no output matching ${pattern} within ${timeoutMs} ms`))), timeoutMs);
    shell.channel.on('data', onData);
    shell.channel.once('close', onClose);
  });
}

/**
 * For benchmarks: reads the shell's stdout to the end without keeping it; resolves with the byte count,
 * the seconds from the first byte to the last, and the exit status. stderr is passed to `onStderr`.
 */
export function drainShell(shell: PortalShell, onStderr: (chunk: Buffer) => void = () => undefined) {
  return new Promise<{ bytes: number; seconds: number; exitCode: number | null }>((resolve) => {
    let bytes = 0;
    let firstAt = 0;
    let lastAt = 0;
    shell.channel.on('data', (chunk: Buffer) => {
      lastAt = performance.now();
      if (!firstAt) firstAt = lastAt;
      bytes += chunk.length;
    });
    shell.channel.stderr.on('data', onStderr);
    shell.channel.resume();
    void shell.exitCode.then((exitCode) => resolve({ bytes, seconds: firstAt ? (lastAt - firstAt) / 1000 : 0, exitCode }));
  });
}
