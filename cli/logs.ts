import readline from 'node:readline';
import type { EsshApi } from './api.js';
import { CliError } from './config.js';
import type { CreatedSession, Session } from '../shapes/answers.js';

/** Starts a detached job on APP and answers its session (the command already runs, with no client). */
export async function runDetached(client: EsshApi, app: string, body: { command: string[]; container_size_mb?: number; env?: Record<string, string> }) {
  if (body.command.length === 0) throw new CliError('essh run --detach needs the command to run: essh run --detach APP -- COMMAND...');
  return client.post<CreatedSession>(`/apps/${encodeURIComponent(app)}/sessions`, { ...body, detach: true });
}

/** How long to wait after the API refused a recording for too many downloads a minute. */
const RATE_LIMITED_WAIT_MS = 10_000;

/**
 * Prints a session's output (its recording's output events, as the account's redaction rules leave
 * them) to stdout. With `follow`, reads the recording again every interval and prints only what is new,
 * until the session has ended; then says how it ended on stderr. The session's state is read before each
 * recording, so the recording read after `ended` holds everything. Resolves with the exit status:
 * following, the program's exit code (1 when it ended another way); else 0.
 */
export async function printLogs(client: EsshApi, id: number, opts: { follow: boolean; intervalMs: number }): Promise<number> {
  let printed = 0;
  for (;;) {
    const session = await client.get<Session>(`/sessions/${id}`);
    try {
      printed = await printOutputAfter(client, id, printed);
    } catch (err) {
      if (!(err instanceof CliError && err.status === 429 && opts.follow)) throw err;
      await new Promise((r) => setTimeout(r, RATE_LIMITED_WAIT_MS));
      continue;
    }
    if (!opts.follow) return 0;
    if (session.state === 'ended') {
      const how = [session.end_reason, session.exit_code !== null && `exit code ${session.exit_code}`, session.end_message].filter(Boolean).join(', ');
      process.stderr.write(`essh: session ${id} ended: ${how}\n`);
      return session.exit_code ?? 1;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs));
  }
}

/** Writes the recording's output events after the first `skip`; answers how many there are now. */
async function printOutputAfter(client: EsshApi, id: number, skip: number): Promise<number> {
  const res = await client.stream(`/sessions/${id}/recording`);
  let n = 0;
  let header = true;
  for await (const line of readline.createInterface({ input: res, crlfDelay: Infinity })) {
    if (header) {
      header = false;
      continue;
    }
    if (!line) continue;
    const [, code, text] = JSON.parse(line) as [number, string, string];
    if (code !== 'o') continue;
    if (n++ >= skip && !process.stdout.write(text)) await new Promise((r) => process.stdout.once('drain', r));
  }
  return Math.max(n, skip);
}
