// File transfer through the portal, with real OpenSSH `scp` (its SFTP mode) and `sftp`, and `essh cp`:
// files go into and out of the session's container as the container's user (the demo image has no
// sftp-server of its own: /.essh/sftp's is used), each file a `file_transfer` event on the account's
// drain and a marker in the recording, never its bytes; the account's operator can turn it off.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { journalPath } from '../journal/writer.js';
import { openPortalSftp } from '../cli/portal-client.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { createTenant, docker, endAllSessions, openSession, sessionContainer, waitFor, waitForState, useTestStack } from './support/harness.js';
import { generateKey, keyOnly, registerKey, runToEnd, sshArgs } from './support/portal-terminal.js';

const stack = useTestStack();
const rx = useHttpsReceiver();
let dir: string;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** scp's and sftp's options to reach the portal: ssh's, with `-P` for the port. */
function portalArgs(keyFile: string): string[] {
  return sshArgs(stack.runtime.portal!.port, keyOnly(keyFile)).map((a) => (a === '-p' ? '-P' : a));
}

/** A random file of `bytes` in the test's folder. */
async function randomFile(name: string, bytes: number): Promise<{ file: string; data: Buffer }> {
  const data = randomBytes(bytes);
  const file = path.join(dir, name);
  await writeFile(file, data);
  return { file, data };
}

/** Runs `cmd` in the session's container (busybox) and resolves with its stdout. */
async function inContainer(id: number, cmd: string[]): Promise<string> {
  const exec = await docker.getContainer(sessionContainer(stack, id)).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    docker.modem.demuxStream(stream, { write: (c: Buffer) => out.push(c) } as never, { write: () => undefined } as never);
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  return Buffer.concat(out).toString().trim();
}

/** A tenant whose app runs as the image's `app` user (uid 1000, owner of /app, the working directory), its owner's key registered. */
async function tenantWithKey(name: string) {
  const t = await createTenant(stack);
  expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { user: 'app' })).status).toBe(200);
  const key = await generateKey(dir, name);
  await registerKey(stack, t.token, t.user.id, key.keyFile);
  return { ...t, keyFile: key.keyFile };
}

async function waitingSession(t: { app: string; token: string }) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await waitForState(stack, t.token, r.body.id, 'waiting_for_client', 60_000);
  return r.body.id as number;
}

const transfersOf = (id: number) => eventsOf(rx).filter((e) => e.operation_id === id && e.event === 'file_transfer');

/** The `essh` CLI with the user's token; resolves with its exit status and output. */
function essh(token: string, args: string[]) {
  return new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const cli = spawn(process.execPath, [path.join(projectRoot, 'bin', 'essh.js'), ...args], {
      env: { ...process.env, ESSH_CONFIG: path.join(dir, 'no-config.json'), ESSH_API_URL: stack.url, ESSH_TOKEN: token }, stdio: ['ignore', 'ignore', 'pipe'], cwd: dir,
    });
    let stderr = '';
    cli.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    cli.once('close', (code) => resolve({ code, stderr }));
  });
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-ft-'));
});

afterAll(async () => {
  await endAllSessions(stack).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('file transfer through the portal', () => {
  it('scp and sftp into session-<id>: both ways byte for byte, as the container\'s user; file_transfer events and recording markers, never the bytes', async () => {
    const t = await tenantWithKey('owner');
    await addHttpsDrain(stack, rx, t.account, 'ft', '/ft');
    const id = await waitingSession(t);
    const target = `session-${id}@127.0.0.1`;
    const up = await randomFile('up.bin', 3 * 1024 * 1024 + 17);

    // scp's default (SFTP) mode; a relative path is the container's working directory, /app.
    const put = await runToEnd('scp', [...portalArgs(t.keyFile), up.file, `${target}:up.bin`]);
    expect(put.code, put.stderr).toBe(0);
    // The file is the container user's (app, uid 1000), not root's.
    expect(await inContainer(id, ['stat', '-c', '%u %s', '/app/up.bin'])).toBe(`1000 ${up.data.length}`);
    // And so is the copy's reach: /etc is root's.
    const denied = await runToEnd('scp', [...portalArgs(t.keyFile), up.file, `${target}:/etc/denied.bin`]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);

    const down = path.join(dir, 'down.bin');
    const get = await runToEnd('scp', [...portalArgs(t.keyFile), `${target}:/app/up.bin`, down]);
    expect(get.code, get.stderr).toBe(0);
    expect(sha256(await readFile(down))).toBe(sha256(up.data));

    // sftp in batch mode: a put and a get in one SFTP session.
    const second = await randomFile('second.bin', 2 * 1024 * 1024 + 5);
    const batch = path.join(dir, 'batch');
    await writeFile(batch, `put ${second.file} /app/second.bin\nget /app/second.bin ${path.join(dir, 'second-back.bin')}\n`);
    const sftp = await runToEnd('sftp', ['-b', batch, ...portalArgs(t.keyFile), target]);
    expect(sftp.code, sftp.stderr).toBe(0);
    expect(sha256(await readFile(path.join(dir, 'second-back.bin')))).toBe(sha256(second.data));

    // A path past sftp-server's 1 KB log line and a name with line breaks that would forge a log line
    // are recorded as they are (the portal reads the SFTP packets, not that log); a file left open
    // when the client goes is recorded as interrupted. ssh2's SFTP client (the CLI's) with the owner's key.
    const longDir = `/app/${Array.from({ length: 6 }, (_, i) => `${i}`.repeat(200)).join('/')}`;
    const forged = '/app/evil\r\nclose "fake" bytes read 0 written 7\r\nx';
    const sftpClient = await openPortalSftp({ host: '127.0.0.1', port: stack.runtime.portal!.port, user: `session-${id}`, token: '' },
      { privateKey: await readFile(t.keyFile) });
    const call = <T>(f: (cb: (err: Error | null | undefined, v: T) => void) => void) => new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));
    let made = '';
    for (const part of longDir.split('/').slice(1)) {
      made += `/${part}`;
      if (made !== '/app') await call<void>((cb) => sftpClient.sftp.mkdir(made, (err) => cb(err, undefined)));
    }
    const small = randomBytes(5000);
    for (const name of [`${longDir}/long.bin`, forged]) {
      await call<void>((cb) => sftpClient.sftp.writeFile(name, small, (err) => cb(err, undefined)));
    }
    const handle = await call<Buffer>((cb) => sftpClient.sftp.open('/app/left-open.bin', 'w', cb));
    await call<void>((cb) => sftpClient.sftp.write(handle, small, 0, 1234, 0, (err) => cb(err, undefined)));
    sftpClient.close();

    // The transfers went beside the session, which still waits for its client.
    expect((await stack.api.get(`/sessions/${id}`, t.token)).body.state).toBe('waiting_for_client');
    expect((await stack.api.post(`/sessions/${id}/terminate`, t.token, { reason: 'file-transfer test' })).status).toBe(202);
    await waitForState(stack, t.token, id, 'ended', 60_000);

    const events = await waitFor('seven file_transfer events', async () => (transfersOf(id).length >= 7 ? transfersOf(id) : undefined), 30_000, 200);
    const common = { stream: 'lifecycle', app: t.app, account: t.account, operation_user_email: t.user.email, transferred_by: t.user.email, container_user: 'app' };
    expect(events.map((e) => [e.path, e.direction, e.bytes])).toEqual([
      ['up.bin', 'upload', up.data.length],
      ['/app/up.bin', 'download', up.data.length],
      ['/app/second.bin', 'upload', second.data.length],
      ['/app/second.bin', 'download', second.data.length],
      [`${longDir}/long.bin`, 'upload', small.length],
      [forged, 'upload', small.length],
      ['/app/left-open.bin', 'upload', 1234],
    ]);
    expect(events[6]!.interrupted).toBe(true);
    expect(events.slice(0, 6).every((e) => e.interrupted === undefined)).toBe(true);
    expect(events.some((e) => e.path === 'fake')).toBe(false);
    for (const e of events) expect(e).toMatchObject(common);
    expect(events[0]!.log).toBe(`essh: ${t.user.name} <${t.user.email}> uploaded "up.bin" as app: ${up.data.length} bytes`);

    // Never the bytes: not in the journal (a few records, not megabytes), the drain or the recording.
    const journal = await readFile(journalPath(stack.dataDir, id));
    expect(journal.length).toBeLessThan(64 * 1024);
    for (const data of [up.data, second.data]) {
      const sample = data.subarray(1000, 1064);
      expect(journal.includes(sample)).toBe(false);
      expect(JSON.stringify(eventsOf(rx))).not.toContain(sample.toString('base64'));
    }
    const rec = await stack.api.get(`/sessions/${id}/recording`, t.token);
    expect(rec.status).toBe(200);
    const markers = String(rec.body).split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => Array.isArray(e) && e[1] === 'm');
    expect(markers.map((m) => m[2])).toContain(`essh: ${t.user.name} <${t.user.email}> downloaded "/app/second.bin" as app: ${second.data.length} bytes`);
  }, 180_000);

  it('copies beside an attached client: the session\'s program sees the file, and its client stays attached', async () => {
    const t = await tenantWithKey('attached-owner');
    const open = await openSession(stack, t, { command: ['sh', '-c', 'read line; wc -c < /app/beside.bin; exit 7'], tty: true });
    await waitForState(stack, t.token, open.id, 'active', 60_000);
    const f = await randomFile('beside.bin', 100_000);
    const put = await runToEnd('scp', [...portalArgs(t.keyFile), f.file, `session-${open.id}@127.0.0.1:beside.bin`]);
    expect(put.code, put.stderr).toBe(0);
    expect((await stack.api.get(`/sessions/${open.id}`, t.token)).body.state).toBe('active');
    open.shell.channel.write('go\r');
    const run = await open.done;
    expect(run.exitCode).toBe(7);
    expect(run.stdout.toString()).toContain('100000');
  }, 120_000);

  it('scp and sftp to <app>@host: each a session of its own that ends with the copy; images files come out whole', async () => {
    const t = await tenantWithKey('app-owner');
    await addHttpsDrain(stack, rx, t.account, 'ft-app', '/ft-app');
    const target = `${t.app}@127.0.0.1`;
    // The image's busybox is the host's (scripts/build-images.sh copies it in).
    const busybox = await readFile('/bin/busybox');
    const fromImage = path.join(dir, 'busybox-from-app');
    const get = await runToEnd('scp', [...portalArgs(t.keyFile), `${target}:/bin/busybox`, fromImage]);
    expect(get.code, get.stderr).toBe(0);
    expect(sha256(await readFile(fromImage))).toBe(sha256(busybox));

    const up = await randomFile('app-up.bin', 2 * 1024 * 1024 + 3);
    const batch = path.join(dir, 'app-batch');
    await writeFile(batch, `put ${up.file} /app/app-up.bin\nget /app/app-up.bin ${path.join(dir, 'app-back.bin')}\nls -l /app/app-up.bin\n`);
    const sftp = await runToEnd('sftp', ['-b', batch, ...portalArgs(t.keyFile), target]);
    expect(sftp.code, sftp.stderr).toBe(0);
    expect(sha256(await readFile(path.join(dir, 'app-back.bin')))).toBe(sha256(up.data));
    // sftp's ls shows the owner: the container's user.
    expect(sftp.stdout.toString()).toMatch(new RegExp(`^-rw\\S+\\s+\\S+\\s+app\\s+app\\s+${up.data.length} .* /app/app-up.bin$`, 'm'));

    // Two sessions, both ended once their copy was done.
    const sessions = await waitFor('both sessions ended', async () => {
      const r = await stack.api.get(`/sessions?app=${t.app}`, t.token);
      const items = r.body.items as { id: number; state: string }[];
      return items.length === 2 && items.every((s) => s.state === 'ended') ? items : undefined;
    }, 60_000, 250);
    const byPath = new Map(sessions.flatMap((s) => transfersOf(s.id)).map((e) => [`${e.direction} ${e.path}`, e]));
    await waitFor('the three transfers on the drain', async () => {
      for (const s of sessions) for (const e of transfersOf(s.id)) byPath.set(`${e.direction} ${e.path}`, e);
      return byPath.size >= 3;
    }, 30_000, 200);
    expect(byPath.get('download /bin/busybox')).toMatchObject({ bytes: busybox.length, container_user: 'app', transferred_by: t.user.email });
    expect(byPath.get('upload /app/app-up.bin')).toMatchObject({ bytes: up.data.length, container_user: 'app' });
    expect(byPath.get('download /app/app-up.bin')).toMatchObject({ bytes: up.data.length });
  }, 180_000);

  it('essh cp copies into and out of a new session of the app, which ends after the copy', async () => {
    const t = await tenantWithKey('cp-owner');
    await addHttpsDrain(stack, rx, t.account, 'ft-cp', '/ft-cp');
    const out = await essh(t.token, ['cp', `${t.app}:/bin/busybox`, './']);
    expect(out.code, out.stderr).toBe(0);
    expect(sha256(await readFile(path.join(dir, 'busybox')))).toBe(sha256(await readFile('/bin/busybox')));
    expect(out.stderr).toMatch(/^\d+ bytes copied to .*busybox \(session (\d+)\)/);
    const downSession = Number(/\(session (\d+)\)/.exec(out.stderr)![1]);

    const up = await randomFile('cp-up.bin', 1024 * 1024 + 9);
    const put = await essh(t.token, ['cp', up.file, `${t.app}:/tmp/`]);
    expect(put.code, put.stderr).toBe(0);
    expect(put.stderr).toContain(`${up.data.length} bytes copied to ${t.app}:/tmp/cp-up.bin`);
    const upSession = Number(/\(session (\d+)\)/.exec(put.stderr)![1]);
    for (const id of [downSession, upSession]) await waitForState(stack, t.token, id, 'ended', 60_000);
    const [down] = await waitFor('essh cp\'s download event', async () => (transfersOf(downSession).length ? transfersOf(downSession) : undefined), 30_000, 200);
    expect(down).toMatchObject({ path: '/bin/busybox', direction: 'download', bytes: (await readFile('/bin/busybox')).length });
    const [upload] = await waitFor('essh cp\'s upload event', async () => (transfersOf(upSession).length ? transfersOf(upSession) : undefined), 30_000, 200);
    expect(upload).toMatchObject({ path: '/tmp/cp-up.bin', direction: 'upload', bytes: up.data.length, container_user: 'app' });

    const bad = await essh(t.token, ['cp', './a', './b']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('essh cp needs APP:PATH on one side');
  }, 180_000);

  it('is refused, with who can change it, once the operator turns it off; legacy scp -O is refused with what to use', async () => {
    const t = await tenantWithKey('off-owner');
    const id = await waitingSession(t);
    const f = await randomFile('off.bin', 1000);

    const legacy = await runToEnd('scp', ['-O', ...portalArgs(t.keyFile), f.file, `session-${id}@127.0.0.1:off.bin`]);
    expect(legacy.code).not.toBe(0);
    expect(legacy.stderr).toContain('essh: legacy scp (scp -O, the old scp/rcp protocol) is not supported: use scp without -O');

    const patched = await stack.api.request('PATCH', `/accounts/${t.account}`, stack.adminToken, { file_transfer: false });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body.file_transfer).toBe(false);
    // The account's own users cannot turn it back on.
    expect((await stack.api.request('PATCH', `/accounts/${t.account}`, t.token, { file_transfer: true })).status).toBe(403);
    const sentence = `essh: file transfer (scp, sftp, essh cp) is turned off for account ${t.account} by its operator; ` +
      `an operator can turn it back on (PATCH /accounts/${t.account} with {"file_transfer": true})`;

    const scp = await runToEnd('scp', [...portalArgs(t.keyFile), f.file, `session-${id}@127.0.0.1:off.bin`]);
    expect(scp.code).not.toBe(0);
    expect(scp.stderr).toContain(sentence);
    expect(await inContainer(id, ['ls', '/app'])).not.toContain('off.bin');

    const before = (await stack.api.get(`/sessions?app=${t.app}`, t.token)).body;
    const sftp = await runToEnd('sftp', ['-b', '/dev/null', ...portalArgs(t.keyFile), `${t.app}@127.0.0.1`]);
    expect(sftp.code).not.toBe(0);
    expect(sftp.stderr).toContain(sentence);
    // Refused before a session was made for it.
    expect((await stack.api.get(`/sessions?app=${t.app}`, t.token)).body).toEqual(before);

    const cp = await essh(t.token, ['cp', f.file, `${t.app}:/tmp/`]);
    expect(cp.code).toBe(1);
    expect(cp.stderr).toContain(`file transfer is turned off for account ${t.account} by its operator`);

    // On again: the same copy goes through.
    expect((await stack.api.request('PATCH', `/accounts/${t.account}`, stack.adminToken, { file_transfer: true })).status).toBe(200);
    const again = await runToEnd('scp', [...portalArgs(t.keyFile), f.file, `session-${id}@127.0.0.1:off.bin`]);
    expect(again.code, again.stderr).toBe(0);
    expect(await inContainer(id, ['ls', '/app'])).toContain('off.bin');
  }, 180_000);
});
