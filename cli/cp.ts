import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { SFTPWrapper } from 'ssh2';
import type { EsshApi } from './api.js';
import type { CreatedSession } from '../shapes/answers.js';
import { CliError } from './config.js';
import { openPortalSftp } from './portal-client.js';
import { askWithEarlyPortal } from './portal-memory.js';

/** `APP:PATH`: an app handle (CONTRACT's handles: lower-case letters, digits, dashes), a colon, a path in its container. */
const REMOTE = /^([a-z0-9][a-z0-9-]*):(.*)$/s;

/** What `essh cp SOURCE DEST` copies: one side is `APP:PATH`, the other a local path. */
export interface CopyPlan {
  direction: 'download' | 'upload';
  app: string;
  /** In the container: absolute, or relative to the app's working directory; empty: that directory. */
  remote: string;
  local: string;
}

/**
 * Reads `essh cp`'s two arguments as scp does: the one with `APP:` before its path is the container's.
 * A local path with a colon in it is written `./a:b`.
 */
export function planCopy(source: string, dest: string): CopyPlan {
  const from = REMOTE.exec(source);
  const to = REMOTE.exec(dest);
  if (from && to) throw new CliError('essh cp copies between this machine and one session\'s container: give one local path (write ./NAME for a local file with a colon in its name).');
  const remote = from ?? to;
  if (!remote) throw new CliError('essh cp needs APP:PATH on one side (the file in a new session of app APP) and a local path on the other, e.g. essh cp myapp:/app/log.txt ./');
  if (/^\d+$/.test(remote[1]!)) {
    throw new CliError(`essh cp reaches an app (APP:PATH), not session ${remote[1]}: to copy into a running session, use OpenSSH with its owner's key ` +
      `(scp -P PORT FILE session-${remote[1]}@HOST:PATH, or sftp), as docs/connecting.md says`);
  }
  return { direction: from ? 'download' : 'upload', app: remote[1]!, remote: remote[2]!, local: from ? dest : source };
}

const isDirectory = (p: string) => stat(p).then((s) => s.isDirectory(), () => false);

function sftpCall<T>(call: (cb: (err: Error | null | undefined, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value))));
}

/** The remote name to write: into a directory (a trailing slash, an empty path, or one that is) under the local file's name. */
async function remoteTarget(sftp: SFTPWrapper, remote: string, local: string): Promise<string> {
  const name = path.basename(local);
  if (remote === '' || remote.endsWith('/')) return `${remote}${name}`;
  const isDir = await sftpCall<{ isDirectory(): boolean }>((cb) => sftp.stat(remote, cb)).then((s) => s.isDirectory(), () => false);
  return isDir ? `${remote}/${name}` : remote;
}

/**
 * `essh cp`: a new session of the app through the API, its SFTP through the portal (with its one-time
 * token, to the portal whose host key the API announced), one file copied with ssh2's SFTP client, and
 * the session ended. The copy runs as the container's user and is journaled as a transfer (path,
 * direction, bytes), never its bytes. Resolves with the bytes copied and where they went.
 */
export async function copyFile(api: EsshApi, plan: CopyPlan): Promise<{ bytes: number; to: string; session: number }> {
  if (plan.direction === 'upload' && !(await stat(plan.local).then((s) => s.isFile(), () => false))) {
    throw new CliError(`${plan.local} is not a file on this machine; essh cp copies one file at a time`);
  }
  // The portal's connection starts while the API creates the session, as for essh ssh.
  const { answer: created, early, remembered } = await askWithEarlyPortal(api.apiUrl, () => api.post<CreatedSession>(`/apps/${encodeURIComponent(plan.app)}/sessions`, {}));
  const end = (reason: string) => api.post(`/sessions/${created.id}/terminate`, { reason }).catch(() => undefined);
  if (!created.connect.host_key) {
    early?.close();
    await end('the client refused a portal without an announced host key');
    throw new CliError(`the essh API announced no host key for its SSH portal (${created.connect.host}:${created.connect.port}); refusing to send the session token to a portal it cannot check. Ask the operator to set ESSH_PORTAL_HOST_KEY on the API.`);
  }
  let opened: Awaited<ReturnType<typeof openPortalSftp>>;
  try {
    opened = await openPortalSftp(created.connect, { early });
  } catch (err) {
    await end('essh cp could not open its SFTP session');
    throw new CliError(await whyRefused(api, created) ?? `session ${created.id}: the portal did not open file transfer (${(err as Error).message})`);
  }
  const { sftp } = opened;
  try {
    if (plan.direction === 'download') {
      const to = (await isDirectory(plan.local)) ? path.join(plan.local, path.posix.basename(plan.remote)) : plan.local;
      await sftpCall<void>((cb) => sftp.fastGet(plan.remote, to, (err) => cb(err, undefined)));
      return { bytes: (await stat(to)).size, to, session: created.id };
    }
    const to = await remoteTarget(sftp, plan.remote, plan.local);
    await sftpCall<void>((cb) => sftp.fastPut(plan.local, to, (err) => cb(err, undefined)));
    return { bytes: (await stat(plan.local)).size, to: `${plan.app}:${to}`, session: created.id };
  } catch (err) {
    const where = plan.direction === 'download' ? `${plan.app}:${plan.remote}` : plan.local;
    throw new CliError(`copying ${where} failed: ${(err as Error).message}`);
  } finally {
    opened.close();
    await Promise.all([end('essh cp: the copy is done'), remembered]);
  }
}

/** The portal says why on the channel's stderr, which ssh2's SFTP client drops: the API tells the likely reason. */
async function whyRefused(api: EsshApi, created: CreatedSession): Promise<string | null> {
  const account = await api.get<{ file_transfer?: boolean }>(`/accounts/${encodeURIComponent(created.account)}`).catch(() => null);
  if (account && account.file_transfer === false) {
    return `file transfer is turned off for account ${created.account} by its operator; an operator can turn it back on (PATCH /accounts/${created.account} with {"file_transfer": true})`;
  }
  return null;
}
