import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type Docker from 'dockerode';
import { log } from '@temporalio/activity';
import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { openSessionEnv } from '../domain/app-env.js';
import { dockerStatus } from '../lib/docker.js';
import { SessionOutputJournal } from '../journal/session-output.js';
import { JournaledOutput, OutputStopped } from '../journal/journaled-output.js';
import { oomSince } from './oom.js';
import type { DetachedProgramExit, DetachedProgramRequest } from '../shapes/session-workflow.js';

/** Where a detached job's output goes besides its journal: nowhere, no client reads it. */
const NO_CLIENT = { write: (_chunk: Buffer, done: (err?: Error | null) => void) => (done(), true) };

/**
 * Runs a detached job's command in its container by `docker exec`, as the portal does for an attached
 * client but without a TTY or stdin, and journals its output (stdout and stderr apart) the same way,
 * until it exits or its container is removed (a terminate or expiry: the journal is then sealed, and
 * the exec's stream ends). Resolves with its exit code; null when its container went first.
 */
export async function runDetachedProgram(
  deps: { db: Db; docker: Docker; dataDir: string; secrets: SecretBox; journalMaxBytes?: number },
  req: DetachedProgramRequest,
  /** The activity's cancellation: its worker is stopping (the host process stops or is upgraded). */
  stop?: AbortSignal,
): Promise<DetachedProgramExit> {
  const { db, docker } = deps;
  const id = req.operationId;
  const op = await db.selectFrom('operations').select('command').where('id', '=', id).executeTakeFirstOrThrow();
  if (!op.command) throw new Error(`session ${id} has no command to run detached`);
  const env = await openSessionEnv(db, deps.secrets, id);
  const journal = new SessionOutputJournal(db, deps.dataDir, id, deps.journalMaxBytes,
    (err, what) => log.warn(what, { operationId: id, error: String(err) }));
  try {
    const exec = await docker.getContainer(req.containerId).exec({
      Cmd: JSON.parse(op.command) as string[],
      AttachStdin: false, AttachStdout: true, AttachStderr: true, Tty: false,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    });
    const startedAt = Date.now();
    const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Duplex;
    // A worker stopping waits for its activities: following the job to its end would hold up the host's
    // stop or upgrade for as long as the job runs. The next process cannot take the job's output
    // over (an exec's output is attached to once), so the session ends instead (container_lost).
    const onStop = () => stream.destroy();
    stop?.addEventListener('abort', onStop);
    try {
      await pipeline(stream, new JournaledOutput(NO_CLIENT, NO_CLIENT, true, journal.output));
    } catch (err) {
      // Sealed by the teardown (the session ended first), or the stream cut as the container went.
      if (!(err instanceof OutputStopped)) log.info('the detached program\'s output stream ended early', { operationId: id, error: String(err) });
    } finally {
      stop?.removeEventListener('abort', onStop);
    }
    if (stop?.aborted) throw new Error('its host process stopped while it ran, and a running detached job is not handed over to the next one');
    try {
      const { ExitCode, Running } = await exec.inspect();
      if (Running) throw new Error('its output stream ended while it still ran');
      if (ExitCode === null) return { exit_code: null, oom_killed: false };
      return { exit_code: ExitCode, oom_killed: ExitCode === 137 && oomSince(req.containerId, startedAt) };
    } catch (err) {
      if (dockerStatus(err) === 404) return { exit_code: null, oom_killed: false };
      throw err;
    }
  } finally {
    journal.close();
  }
}
