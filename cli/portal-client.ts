import type { Client, ClientChannel, SFTPWrapper } from 'ssh2';

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
  return connectPortal(target, opts, 'the shell opened', (client, resolve, fail) => {
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
      resolve({ client, channel, exitCode, close: () => client.end() });
    });
  });
}

/** Opens the session's SFTP through the portal (`essh cp`), authenticating as openPortalShell does. */
export async function openPortalSftp(target: PortalTarget, opts: Pick<PortalShellOptions, 'readyTimeoutMs' | 'privateKey'> = {}): Promise<{ sftp: SFTPWrapper; close(): void }> {
  return connectPortal(target, opts, 'the SFTP session opened', (client, resolve, fail) => {
    client.sftp((err, sftp) => (err ? fail(err) : resolve({ sftp, close: () => client.end() })));
  });
}

/**
 * Connects and authenticates to the portal, checking its host key, then lets `open` open a channel:
 * resolves with what `open` resolves with, rejects with a sentence for a refusal or a connection lost
 * before `opened`.
 */
async function connectPortal<T>(
  target: PortalTarget,
  opts: Pick<PortalShellOptions, 'readyTimeoutMs' | 'privateKey' | 'localAddress'>,
  opened: string,
  open: (client: Client, resolve: (value: T) => void, fail: (err: Error) => void) => void,
): Promise<T> {
  const ssh2 = await loadSshClient();
  const expectedKey = target.host_key ? Buffer.from(target.host_key.trim().split(/\s+/)[1] ?? '', 'base64') : null;
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(err);
    };
    client.on('keyboard-interactive', (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => target.token)));
    // `on`, not `once`: a connection that breaks later (the portal killed) may say so more than once,
    // and an error without a listener would bring the whole process down.
    client.on('error', (err) => fail(authMessage(err, target, opts.privateKey !== undefined)));
    // A connection closed before the channel opened (the portal stopping, an authentication deadline)
    // may come without an error: without this the caller would wait forever.
    client.once('close', () => fail(new Error(`the SSH portal at ${target.host}:${target.port} closed the connection before ${opened}`)));
    client.once('ready', () => open(client, (value) => {
      settled = true;
      resolve(value);
    }, fail));
    client.connect({
      host: target.host,
      port: target.port,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      username: target.user,
      // With a key, only the key: a spent token offered first would count as a failed attempt.
      ...(opts.privateKey !== undefined ? { privateKey: opts.privateKey } : { password: target.token, tryKeyboard: true }),
      readyTimeout: opts.readyTimeoutMs ?? 20_000,
      hostVerifier: (presented: Buffer) => expectedKey === null || presented.equals(expectedKey),
    });
    // The portal's side does the same: small interactive packets must not wait for delayed ACKs.
    client.setNoDelay(true);
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
