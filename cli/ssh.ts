import { loadSshClient, openPortalShell } from './portal-client.js';
import { askWithEarlyPortal } from './portal-memory.js';
import type { EsshApi } from './api.js';
import type { CreatedSession, Session } from '../shapes/answers.js';
import { CliError } from './config.js';
import { printable } from '../lib/printable.js';
import { startLocalForwards, type LocalForward } from './forward.js';

const READY_POLL_MS = 50;
const READY_TIMEOUT_MS = 5 * 60_000;

export interface SshOptions {
  containerSizeMb?: number;
  /** Extra env for this session only (`-e KEY=VALUE`). */
  env?: Record<string, string>;
  command: string[];
  /**
   * Whether to ask for a remote TTY: true (`-t`) even without a local terminal, false (`-T`) never,
   * undefined when stdin and stdout are both a terminal.
   */
  tty?: boolean;
  /** `-L`: local ports forwarded through the session's container while the session lasts. */
  forwards?: LocalForward[];
}

/**
 * `essh ssh APP [-- command…]`: creates the session through the API, waits for its container, attaches
 * through the portal and resolves with the remote exit status. The local terminal is put in raw mode
 * only while attached and is restored on every way out (normal end, error, signal). Throws on essh's
 * own failures; the caller turns those into exit status 255.
 */
export async function sshToApp(api: EsshApi, app: string, opts: SshOptions): Promise<number> {
  const tty = opts.tty ?? Boolean(process.stdin.isTTY && process.stdout.isTTY);
  // Raw mode only where there is a local terminal to put in it; with `-t` and stdin from a pipe the
  // bytes go through as they come.
  const interactive = tty && Boolean(process.stdin.isTTY);
  const size = () => ({ rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 });
  const started = Date.now();
  // The SSH connection and key exchange to the portal used last start while the API creates the
  // session (cli/portal-memory.ts); the token goes out on it only if the answer names that same portal.
  const asking = askWithEarlyPortal(api.apiUrl, () => api.post<CreatedSession>(`/apps/${encodeURIComponent(app)}/sessions`, {
    ...(opts.command.length ? { command: opts.command } : {}),
    ...(opts.containerSizeMb !== undefined ? { container_size_mb: opts.containerSizeMb } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  }));
  // Handled below; without this a quick refusal would count as unhandled while ssh2 loads.
  asking.catch(() => undefined);
  await loadSshClient().catch(() => undefined);
  const { answer: created, early, remembered } = await asking;
  // The token goes only to a portal whose key the API vouched for; an API that names none gets none.
  if (!created.connect.host_key) {
    early?.close();
    void api.post(`/sessions/${created.id}/terminate`, { reason: 'the client refused a portal without an announced host key' }).catch(() => undefined);
    throw new CliError(`the essh API announced no host key for its SSH portal (${created.connect.host}:${created.connect.port}); refusing to send the session token to a portal it cannot check. Ask the operator to set ESSH_PORTAL_HOST_KEY on the API.`);
  }
  process.stderr.write(`Provisioning container for session ${created.id}… `);
  // The SSH handshake runs while the container is provisioned: the portal holds the channel until the
  // session is ready and starts the program then, so the channel's output is passed on from the
  // start. "ready in" goes out when the API says the container is ready or the program's first byte
  // arrives, whichever comes first: no poll stands between the user and the prompt.
  const connecting = openPortalShell(created.connect, {
    pty: tty ? { ...size(), term: process.env.TERM || undefined } : null,
    early,
  });
  connecting.catch(() => undefined);
  let ready = false;
  const announceReady = () => {
    if (ready) return;
    ready = true;
    process.stderr.write(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  };
  const notReady = waitUntilReady(api, created.id, () => ready).then(announceReady);
  const shell = await Promise.race([connecting, notReady.then(() => connecting)]).catch(async (err) => {
    void connecting.then((s) => s.close(), () => undefined);
    // The error goes on a line of its own, after the progress line.
    if (!ready) process.stderr.write('\n');
    throw err;
  });
  // Provisioning failed while we were connected: essh's failure, not the program's.
  notReady.catch((err) => {
    shell.close();
    process.stderr.write(`${ready ? '' : '\n'}essh: ${printable((err as Error).message)}\n`);
    process.exit(255);
  });
  let closeForwards = () => {};
  if (opts.forwards?.length) {
    try {
      closeForwards = await startLocalForwards(shell.client, opts.forwards, (line) => process.stderr.write(`${line}${interactive ? '\r\n' : '\n'}`));
    } catch (err) {
      shell.close();
      throw err;
    }
  }
  shell.channel.once('data', announceReady);
  shell.channel.stderr.once('data', announceReady);
  const { channel } = shell;
  const stdin = process.stdin;
  let restored = !interactive;
  const restore = () => {
    if (restored) return;
    restored = true;
    stdin.setRawMode(false);
  };
  const onResize = () => {
    const { rows, cols } = size();
    channel.setWindow(rows, cols, 0, 0);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    restore();
    shell.close();
    process.exit(128 + (signal === 'SIGHUP' ? 1 : signal === 'SIGINT' ? 2 : 15));
  };
  process.on('exit', restore);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, onSignal);
  try {
    if (interactive) stdin.setRawMode(true);
    if (tty && process.stdout.isTTY) {
      process.stdout.on('resize', onResize);
      // The terminal may have been resized while the container was provisioned.
      onResize();
    }
    stdin.pipe(channel);
    channel.pipe(process.stdout, { end: false });
    channel.stderr.pipe(process.stderr, { end: false });
    const code = await shell.exitCode;
    // A program that printed nothing and exited at once ran all the same: its session was ready.
    if (code !== null) announceReady();
    // The exit status may come before the last output has been written out here.
    await outputDrained(channel);
    // bin/essh exits as soon as this returns: the memory of the portal must be on disk by then.
    await remembered;
    return code ?? 255;
  } finally {
    closeForwards();
    restore();
    stdin.unpipe(channel);
    stdin.pause();
    process.stdout.off('resize', onResize);
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
    shell.close();
  }
}

async function waitUntilReady(api: EsshApi, id: number, seenOutput: () => boolean): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (seenOutput()) return;
    const s = await api.get<Session>(`/sessions/${id}`);
    if (s.state === 'waiting_for_client' || s.state === 'active') return;
    // The portal attaches as soon as the container exists, so a quick program may have run and exited
    // on this connection before the record ever said `waiting_for_client`: its output and exit status
    // are on their way through the portal.
    if (s.end_reason === 'exit') return;
    if (s.state === 'ended' || (s.state === 'ending' && s.end_reason)) {
      throw new CliError(`session ${id} ended before it was ready (${s.end_reason}${s.end_message ? `: ${s.end_message}` : ''})`);
    }
    if (Date.now() > deadline) throw new CliError(`session ${id} is still provisioning after 5 minutes; see essh operation ${id}`);
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
}

/** Resolves once stdout and stderr of the channel have ended (at most a few seconds after the exit status). */
function outputDrained(channel: import('ssh2').ClientChannel): Promise<void> {
  const ended = (stream: NodeJS.ReadableStream & { readableEnded?: boolean; destroyed?: boolean }) =>
    new Promise<void>((resolve) => {
      if (stream.readableEnded || stream.destroyed) return resolve();
      stream.once('end', resolve);
      stream.once('close', resolve);
    });
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 5_000);
    timer.unref();
    void Promise.all([ended(channel), ended(channel.stderr)]).then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
