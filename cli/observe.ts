import type { EsshApi } from './api.js';
import type { CreatedSession } from '../shapes/answers.js';
import { CliError } from './config.js';
import { openPortalShell } from './portal-client.js';
import { askWithEarlyPortal } from './portal-memory.js';

const CTRL_C = 0x03;

/**
 * `essh watch ID`: follows a live session's output read-only, through the portal of its host, with a
 * one-time watch token from the API (POST /sessions/{id}/watch) that is the caller's. Nothing typed
 * here is sent: on a terminal, keys are read in raw mode and dropped, and Ctrl-C stops watching.
 * Resolves with the portal's exit status: 0 once watching ended (the session ended, or Ctrl-C), 1 when
 * the portal refused.
 */
export async function watchSession(api: EsshApi, id: number): Promise<number> {
  const interactive = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  // As for essh ssh: the portal's connection starts while the API answers.
  const { answer: watch, early, remembered } = await askWithEarlyPortal(api.apiUrl, () => api.post<CreatedSession>(`/sessions/${id}/watch`, {}));
  // As for essh ssh: the token goes only to a portal whose key the API vouched for.
  if (!watch.connect.host_key) {
    early?.close();
    throw new CliError(`the essh API announced no host key for the SSH portal (${watch.connect.host}:${watch.connect.port}); refusing to send the watch token to a portal it cannot check. Ask the operator to set ESSH_PORTAL_HOST_KEY on the API.`);
  }
  const size = { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 };
  const shell = await openPortalShell(watch.connect, { pty: interactive ? { ...size, term: process.env.TERM || undefined } : null, early });
  const stdin = process.stdin;
  let raw = false;
  const restore = () => {
    if (!raw) return;
    raw = false;
    stdin.setRawMode(false);
  };
  const stop = () => {
    restore();
    shell.close();
  };
  const onKeys = (chunk: Buffer) => {
    if (chunk.includes(CTRL_C)) stop();
  };
  process.on('exit', restore);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, stop);
  try {
    if (interactive) {
      stdin.setRawMode(true);
      raw = true;
      stdin.on('data', onKeys);
    }
    shell.channel.pipe(process.stdout, { end: false });
    shell.channel.stderr.pipe(process.stderr, { end: false });
    const code = await shell.exitCode;
    await remembered;
    return code ?? 0;
  } finally {
    restore();
    stdin.off('data', onKeys);
    stdin.pause();
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, stop);
    shell.close();
  }
}
