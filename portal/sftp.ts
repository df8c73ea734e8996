import type { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import type { ServerChannel } from 'ssh2';
import type { Db } from '../lib/db.js';
import { dockerMessage } from '../lib/docker.js';
import { printable } from '../lib/printable.js';
import { SFTP_SERVER_COMMAND } from '../host/containers.js';
import { helperOutput } from './helper-exec.js';
import { appendRecord, recordedUser, type RecordDeps } from './records.js';
import { TransferWatch } from './sftp-watch.js';

export interface SftpDeps extends RecordDeps {
  docker: Docker;
}

/** One SFTP subsystem channel on a session's container. */
export interface SftpRequest {
  sessionId: number;
  containerId: string;
  userId: number;
  channel: ServerChannel;
}

/** sftp-server's first INFO line: the user it runs as (the container's, the session's program's). */
const SESSION_OPENED = /^session opened for local user (\S+) from /;
/** How long sftp-server has to note its open files and exit once the client is gone. */
const EXIT_WAIT_MS = 10_000;
const STDERR_KEPT = 2048;

/** The sentence a user reads when the account's operator turned file transfer off. */
export function fileTransferOff(account: string): string {
  return `essh: file transfer (scp, sftp, essh cp) is turned off for account ${account} by its operator; ` +
    `an operator can turn it back on (PATCH /accounts/${account} with {"file_transfer": true})`;
}

/** Whether the account that owns `app` lets its users copy files (an `<app>` login's check before it creates a session). */
export async function appAllowsFileTransfer(db: Db, app: string): Promise<{ account: string; allowed: boolean } | null> {
  const row = await db.selectFrom('apps as p').innerJoin('accounts as a', 'a.id', 'p.account_id')
    .select(['a.handle', 'a.file_transfer']).where('p.handle', '=', app).executeTakeFirst();
  return row ? { account: row.handle, allowed: Number(row.file_transfer) === 1 } : null;
}

/**
 * Serves one `sftp` subsystem channel: OpenSSH's sftp-server, mounted read-only in every session
 * container (/.essh/sftp), runs there by `docker exec` without a TTY and as the container's user (the
 * session's program's), and the channel's bytes go to it and back unchanged. The portal reads only the
 * packets' heads (portal/sftp-watch.ts): each file copied is one `transfer` record in the journal (path,
 * direction, bytes, who: journal/format.ts TransferDetails), the drains' `file_transfer` event and a
 * marker in the recording; the file's bytes are never journaled. sftp-server's log lines go nowhere but
 * here: the user it ran as, or why it could not start. Resolves with its exit status.
 */
export async function serveSftp(deps: SftpDeps, req: SftpRequest): Promise<number> {
  const { docker, log } = deps;
  const { sessionId, channel } = req;
  const user = await recordedUser(deps.db, req.userId);
  const container = docker.getContainer(req.containerId);
  let exec: Docker.Exec;
  let stream: Duplex;
  try {
    exec = await container.exec({ Cmd: SFTP_SERVER_COMMAND, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false });
    stream = (await exec.start({ hijack: true, stdin: true })) as unknown as Duplex;
  } catch (err) {
    log.warn({ err: dockerMessage(err), session: sessionId }, 'starting sftp-server failed');
    say(channel, `essh: session ${sessionId}: the SFTP server could not start in its container (${dockerMessage(err)})`);
    return 1;
  }

  let containerUser: string | undefined;
  /** What sftp-server said before it served: why it could not, when it did not. */
  let stderr = '';
  const watch = new TransferWatch((t) => {
    // The bytes went to or came from the container whatever becomes of the record: it never holds them.
    appendRecord(deps, sessionId, 'a file transfer', (journal) => journal.transfer({ user, ...t, ...(containerUser ? { container_user: containerUser } : {}) }));
  });
  let channelGone = false;
  const onLine = (line: string) => {
    if (containerUser !== undefined) return;
    const m = SESSION_OPENED.exec(line.trimEnd());
    if (m) containerUser = m[1];
    else if (stderr.length < STDERR_KEPT) stderr += `${line.trimEnd()}\n`;
  };
  // Its stdout is SFTP packets, the files' bytes among them: to the channel, never journaled.
  const output = helperOutput(stream, {
    write: (chunk, cb) => {
      watch.fromServer(chunk);
      // The client is gone: what sftp-server still says is dropped, so it is never blocked writing it.
      if (channelGone || !channel.writable) return (cb(), true);
      return channel.write(chunk, cb);
    },
  }, onLine, log, sessionId, 'sftp-server');
  channel.on('data', (chunk: Buffer) => watch.fromClient(chunk));
  channel.on('error', () => undefined);
  // The client's end of input is sftp-server's: it then notes what it still had open and exits.
  channel.pipe(stream);
  let exitTimer: NodeJS.Timeout | undefined;
  channel.once('close', () => {
    channelGone = true;
    if (!stream.writableEnded) stream.end();
    exitTimer = setTimeout(() => stream.destroy(), EXIT_WAIT_MS);
  });
  await output.ended;
  clearTimeout(exitTimer);
  channel.unpipe(stream);
  watch.end();
  const code = await exec.inspect().then((i) => i.ExitCode ?? 1, () => 1);
  if (containerUser === undefined) {
    // It never got as far as serving: the image's /etc/passwd lacks the container's user, say.
    const why = printable(`${stderr}${output.partialLine()}`.trim()).slice(0, 300) || `it exited with status ${code}`;
    log.info({ session: sessionId, exit_code: code }, 'sftp-server did not start serving');
    const hint = /No user found/.test(why) ? ' (the container\'s user needs an entry in the image\'s /etc/passwd)'
      : code === 126 || code === 127 ? ' (its container may predate file transfer, which mounts /.essh/sftp: start a new session)' : '';
    say(channel, `essh: session ${sessionId}: the SFTP server could not serve in its container: ${why}${hint}`);
  }
  return code;
}

function say(channel: ServerChannel, line: string) {
  if (channel.stderr.writable) channel.stderr.write(`${line}\n`);
}
