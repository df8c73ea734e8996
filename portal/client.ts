import ssh2, { type Client, type ClientChannel } from 'ssh2';

/** Where and as whom to attach: a session's `connect` block (CONTRACT §3). */
export interface PortalTarget {
  host: string;
  port: number;
  user: string;
  token: string;
}

export interface PortalShellOptions {
  /** Ask for a PTY of this size (interactive use); none: plain stdin/stdout/stderr. */
  pty?: { rows: number; cols: number; term?: string } | null;
  readyTimeoutMs?: number;
}

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
 * token (as a password, or keyboard-interactive for portals that ask that way). Used by `essh ssh` and
 * by anything that drives the portal programmatically (benchmarks).
 *
 * The host key is not checked: the target comes from the API over the caller's authenticated
 * connection and the token is single-use, but pinning the portal's key is a known gap.
 */
export function openPortalShell(target: PortalTarget, opts: PortalShellOptions = {}): Promise<PortalShell> {
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
    client.once('error', (err) => fail(authMessage(err, target)));
    client.once('ready', () => {
      const pty = opts.pty ? { rows: opts.pty.rows, cols: opts.pty.cols, term: opts.pty.term ?? 'xterm-256color', height: 0, width: 0 } : false;
      client.shell(pty, (err, channel) => {
        if (err) return fail(err);
        settled = true;
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
    client.connect({
      host: target.host,
      port: target.port,
      username: target.user,
      password: target.token,
      tryKeyboard: true,
      readyTimeout: opts.readyTimeoutMs ?? 20_000,
      hostVerifier: () => true,
    });
  });
}

function authMessage(err: Error & { level?: string }, target: PortalTarget): Error {
  if (err.level === 'client-authentication') {
    return new Error(`the portal refused the session token for ${target.user} (it works once and expires after a few minutes); start a new session`);
  }
  if (err.level === 'client-socket' || (err as NodeJS.ErrnoException).code) {
    return new Error(`cannot reach the SSH portal at ${target.host}:${target.port} (${err.message})`);
  }
  return err;
}
