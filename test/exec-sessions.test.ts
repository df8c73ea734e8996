import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '../lib/docker.js';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { openPortalShell } from '../cli/portal-client.js';
import {
  createTenant, docker, endAllSessions, runInSession, sessionContainer, startOperationIdsAt, startTestStack, useTestStack, uniqueIdBase, waitFor,
  waitForState, type TestStack,
} from './support/harness.js';
import { generateKey, registerKey } from './support/portal-terminal.js';
import { hostProcessEnv, startWorkerProcess } from './support/worker-process.js';

/**
 * Exec sessions (CONTRACT §4, §7, §8): the program runs by `docker exec` in a container whose main
 * process is essh's idle init, from the app's warm pool when one fits; every byte the client gets is
 * in the session's journal first; the plan slot is free the moment the client has its exit status.
 */

const run = promisify(execFile);
const stack = useTestStack();
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-exec-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
}, 120_000);

/** The bytes of a session's journal's output records (of one stream, if given), in order. */
async function journaledOutput(s: TestStack, id: number, stream?: 'stdout' | 'stderr'): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const r of readRecords(journalPath(s.dataDir, id))) {
    if (r.type === RecordType.output && (!stream || r.stream === stream)) parts.push(Buffer.from(r.payload));
  }
  return Buffer.concat(parts);
}

async function poolContainers(appId: number) {
  return docker.listContainers({
    filters: { label: [`${LABELS.instance}=${stack.runtime.installation.id}`, `${LABELS.pool}=true`, `${LABELS.appId}=${appId}`], status: ['running'] },
  }).then((cs) => cs.filter((c) => c.Names.some((n) => n.includes('-pool-'))));
}

describe('the program', () => {
  it("runs by docker exec: stdin to EOF, stdout and stderr apart, binary intact both ways, the client's TERM", async () => {
    const t = await createTenant(stack);
    const input = randomBytes(3 * 1024 * 1024);
    const r = await runInSession(stack, t, { command: ['sh', '-c', 'cat; echo done >&2; exit 4'], input });
    expect(r.exitCode).toBe(4);
    expect(createHash('sha256').update(r.stdout).digest('hex')).toBe(createHash('sha256').update(input).digest('hex'));
    expect(r.stderr.toString()).toBe('done\n');
    expect(r.ended).toMatchObject({ end_reason: 'exit', exit_code: 4 });
    // The journal has exactly what the client got, stream by stream. (Across the two streams Docker
    // keeps no order: stderr's "done" may come before the end of a stdout held up by back-pressure.)
    expect((await journaledOutput(stack, r.id, 'stdout')).equals(r.stdout)).toBe(true);
    expect((await journaledOutput(stack, r.id, 'stderr')).equals(r.stderr)).toBe(true);

    const tty = await runInSession(stack, t, { tty: true, body: {}, input: 'echo "term=$TERM"; exit 0\n', size: { rows: 30, cols: 100 } });
    expect(tty.stdout.toString()).toMatch(/term=xterm-256color/);
    expect(tty.exitCode).toBe(0);
  });

  it('an image with neither a shell nor sleep works: the idle init comes from the host', async () => {
    // An image of one static binary, nothing else.
    const rootfs = path.join(dir, 'tiny');
    await run('mkdir', ['-p', path.join(rootfs, 'bin')]);
    await run('cp', ['/bin/busybox', path.join(rootfs, 'bin', 'busybox')]);
    const image = `essh/tiny-${randomBytes(3).toString('hex')}:1`;
    await run('sh', ['-c', `tar -C ${rootfs} -c . | docker import - ${image} >/dev/null`]);
    try {
      const t = await createTenant(stack, { image });
      const r = await runInSession(stack, t, { command: ['/bin/busybox', 'sh', '-c', 'echo "hello from $(/bin/busybox ls /bin)"; exit 6'] });
      expect(r.stdout.toString()).toBe('hello from busybox\n');
      expect(r.exitCode).toBe(6);
      expect(r.ended).toMatchObject({ end_reason: 'exit', exit_code: 6 });
    } finally {
      await docker.getImage(image).remove({ force: true }).catch(() => undefined);
    }
  });

  it('a program that leaves children behind still ends the session when it exits', async () => {
    const t = await createTenant(stack);
    const started = Date.now();
    const r = await runInSession(stack, t, { command: ['sh', '-c', 'sleep 300 & echo bg; exit 2'] });
    expect(r.exitCode).toBe(2);
    expect(r.ended).toMatchObject({ end_reason: 'exit', exit_code: 2 });
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});

/** Registers a new OpenSSH key for the tenant's user; returns the ssh arguments that use it against the portal. */
async function sshWithKey(t: { user: { id: number } }, name: string): Promise<string[]> {
  const { keyFile } = await generateKey(dir, name);
  // The operator registers it, holding the key it made.
  await registerKey(stack, stack.adminToken, t.user.id, keyFile);
  return [
    '-p', String(stack.runtime.sshPort), '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes',
  ];
}

describe('plan slots', () => {
  it('100 back-to-back `ssh APP@host true` on a plan of one session all succeed: the slot is free when ssh returns', async () => {
    const t = await createTenant(stack, { plan: 'development' });
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { warm_pool: 1 })).status).toBe(200);
    const args = await sshWithKey(t, 'slots_key');
    for (let i = 0; i < 100; i++) {
      const r = await run('ssh', [...args, `${t.app}@127.0.0.1`, i % 10 === 0 ? 'head -c 1000000 /dev/zero | wc -c' : 'true'])
        .then((x) => ({ code: 0, stderr: x.stderr }), (e) => ({ code: e.code as number, stderr: String(e.stderr) }));
      expect(r, `run ${i}`).toEqual({ code: 0, stderr: '' });
    }
    // And through the API: a terminate answered 202 frees the slot at once.
    const live = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(live.status, JSON.stringify(live.body)).toBe(201);
    expect((await stack.api.post(`/sessions/${live.body.id}/terminate`, t.token, {})).status).toBe(202);
    const next = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(next.status, JSON.stringify(next.body)).toBe(201);
    await stack.api.post(`/sessions/${next.body.id}/terminate`, t.token, {});
    await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { warm_pool: 0 });
  }, 300_000);
});

describe('the warm pool', () => {
  it('keeps warm_pool containers; parallel sessions never share one; it refills, and settings changes replace it', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const app = (await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { warm_pool: 2 })).body;
    expect(app.warm_pool).toBe(2);
    await stack.runtime.pool!.refill();
    const before = await waitFor('two pool containers', async () => {
      const p = await poolContainers(app.id);
      return p.length === 2 ? p : undefined;
    }, 60_000, 250);
    // Pool containers are the app's, not sessions: they hold no plan slot and carry no operation.
    expect(before.every((c) => c.Labels[LABELS.app] === t.app && c.Labels[LABELS.stack] === 'local')).toBe(true);

    const [a, b] = await Promise.all([0, 1].map(() => stack.api.post(`/apps/${t.app}/sessions`, t.token, { container_size_mb: 512 })));
    expect(a!.status).toBe(201);
    expect(b!.status).toBe(201);
    const [ra, rb] = await Promise.all([a!, b!].map((r) => waitForState(stack, t.token, r.body.id, 'waiting_for_client')));
    expect(ra.container_id).not.toBe(rb.container_id);
    for (const s of [ra, rb]) {
      const info = await docker.getContainer(s.container_id).inspect();
      // A pool container, renamed for the session: one of `before`, or (Docker lists the newest first)
      // the refill made after the other session took its container, if this session's take came later.
      expect(info.Config.Labels[LABELS.pool], `session ${s.id}'s container was made for the pool`).toBe('true');
      expect(info.Name).toBe(`/${sessionContainer(stack, s.id)}`);
      expect(info.HostConfig.Memory).toBe(512 * 1024 * 1024);
      expect(info.HostConfig.NanoCpus).toBe(2e9);
    }
    // Refilled with new containers.
    const refilled = await waitFor('the pool to refill', async () => {
      const p = await poolContainers(app.id);
      return p.length === 2 && p.every((c) => c.Id !== ra.container_id && c.Id !== rb.container_id) ? p : undefined;
    }, 60_000, 250);
    // A session from the pool runs like any other.
    const done = await runInSession(stack, t, { command: ['sh', '-c', 'echo "$APP_ENV"; exit 0'] });
    expect(done.stdout.toString()).toBe('test\n');

    // The app's settings change: the pool is replaced by containers made with the new ones.
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { env: { APP_ENV: 'changed' } })).status).toBe(200);
    await stack.runtime.pool!.refill();
    const replaced = await waitFor('the pool to be replaced', async () => {
      const p = await poolContainers(app.id);
      return p.length === 2 && p.every((c) => !refilled.some((o) => o.Id === c.Id)) ? p : undefined;
    }, 60_000, 250);
    for (const c of replaced) {
      expect((await docker.getContainer(c.Id).inspect()).Config.Env).toContain('APP_ENV=changed');
    }
    const after = await runInSession(stack, t, { command: ['sh', '-c', 'echo "$APP_ENV"'] });
    expect(after.stdout.toString()).toBe('changed\n');

    // No pool wanted any more: its containers go.
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { warm_pool: 0 })).status).toBe(200);
    await stack.runtime.pool!.refill();
    await waitFor('the pool to be empty', async () => (await poolContainers(app.id)).length === 0, 60_000, 250);
    for (const s of [ra, rb]) await stack.api.post(`/sessions/${s.id}/terminate`, t.token, {});
  });
});

describe('OpenSSH connection multiplexing', () => {
  it('each session channel of one ControlMaster connection is a session of its own, with the client\'s TERM', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const control = path.join(dir, 'mux.sock');
    const base = [...(await sshWithKey(t, 'mux_key')), '-o', `ControlPath=${control}`];
    const master = spawn('ssh', [...base, '-o', 'ControlMaster=yes', '-N', `${t.app}@127.0.0.1`], { stdio: 'ignore' });
    try {
      await waitFor('the control socket', async () => (await run('ssh', [...base, '-O', 'check', `${t.app}@127.0.0.1`]).then(() => true, () => false)), 15_000, 200);
      const results = await Promise.all([1, 2].map((n) =>
        run('ssh', [...base, '-o', 'ControlMaster=no', `${t.app}@127.0.0.1`, `echo mux-${n}; exit ${n}`]).then(
          (r) => ({ code: 0, out: r.stdout }), (e) => ({ code: e.code as number, out: String(e.stdout) }))));
      expect(results).toEqual([{ code: 1, out: 'mux-1\n' }, { code: 2, out: 'mux-2\n' }]);
      const tty = await run('sh', ['-c', `TERM=xterm-kitty ssh -tt ${base.map((a) => `'${a}'`).join(' ')} -o ControlMaster=no ${t.app}@127.0.0.1 'echo "term=$TERM"'`])
        .catch((e) => e);
      expect(String(tty.stdout)).toMatch(/term=xterm-kitty/);
      const sessions = (await stack.api.get(`/sessions?app=${t.app}`, t.token)).body.items as { end_reason: string; exit_code: number }[];
      expect(sessions.length).toBe(3);
    } finally {
      master.kill('SIGTERM');
    }
  });
});

describe('two installations on one engine', () => {
  it('run sessions side by side with the same operation ids, and neither touches the other\'s containers', async () => {
    const other = await startTestStack();
    try {
      expect(other.runtime.installation.id).not.toBe(stack.runtime.installation.id);
      // Past every id either database has handed out: both give the next session the same id.
      const maxId = async (x: TestStack) => Number((await x.runtime.db.selectFrom('operations').select((eb) => eb.fn.max('id').as('m')).executeTakeFirst())?.m ?? 0);
      const base = Math.max(await maxId(stack), await maxId(other), uniqueIdBase()) + 1000;
      await startOperationIdsAt(stack.runtime.db, stack.runtime.engine, base);
      await startOperationIdsAt(other.runtime.db, other.runtime.engine, base);
      const [t1, t2] = [await createTenant(stack), await createTenant(other)];
      const [s1, s2] = await Promise.all([
        stack.api.post(`/apps/${t1.app}/sessions`, t1.token, {}), other.api.post(`/apps/${t2.app}/sessions`, t2.token, {}),
      ]);
      expect(s1.body.id).toBe(s2.body.id);
      const [r1, r2] = await Promise.all([
        waitForState(stack, t1.token, s1.body.id, 'waiting_for_client'), waitForState(other, t2.token, s2.body.id, 'waiting_for_client'),
      ]);
      expect(r1.container_id).not.toBe(r2.container_id);
      // Each installation's reconciler passes leave the other's session alone.
      await stack.runtime.hostAgent!.reconcileOnce();
      await other.runtime.hostAgent!.reconcileOnce();
      expect((await docker.getContainer(r1.container_id).inspect()).State.Running).toBe(true);
      expect((await docker.getContainer(r2.container_id).inspect()).State.Running).toBe(true);
      const [e1, e2] = await Promise.all([
        runInSessionOf(stack, t1, s1.body), runInSessionOf(other, t2, s2.body),
      ]);
      expect([e1, e2]).toEqual([`one ${s1.body.id}\n`, `two ${s2.body.id}\n`]);
    } finally {
      await endAllSessions(other);
      await other.stop();
    }
  });
});

/** Attaches to an existing session and types a line that names its installation's role in the test. */
async function runInSessionOf(s: TestStack, _t: { token: string }, created: { id: number; connect: any }): Promise<string> {
  const shell = await openPortalShell(created.connect, {});
  const out: Buffer[] = [];
  shell.channel.on('data', (c: Buffer) => out.push(c));
  shell.channel.end(`echo ${s === stack ? 'one' : 'two'} ${created.id}\n`);
  await shell.exitCode;
  shell.close();
  return Buffer.concat(out).toString();
}

describe('kill -9 of the host process while a session prints', () => {
  it('the journal holds at least every byte the client received', async () => {
    const split = await startTestStack({ parts: { api: true, worker: true, workflowBundle: (await import('./support/harness.js')).workflowBundle() } });
    const host = await startWorkerProcess(split, hostProcessEnv('kill'));
    try {
      const t = await createTenant(split);
      const r = await split.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo "line $i of output"; done'] });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const shell = await openPortalShell(r.body.connect, {});
      const received: Buffer[] = [];
      let bytes = 0;
      shell.channel.on('data', (c: Buffer) => {
        received.push(c);
        bytes += c.length;
      });
      await waitFor('output to flow', async () => bytes > 5_000_000, 60_000, 20);
      await host.kill('SIGKILL');
      await shell.exitCode;
      const got = Buffer.concat(received);
      const journaled = await journaledOutput(split, r.body.id);
      expect(journaled.length).toBeGreaterThanOrEqual(got.length);
      expect(journaled.subarray(0, got.length).equals(got)).toBe(true);
    } finally {
      await host.kill('SIGKILL');
      // The session ends without its client; a new host process would clean it up.
      await split.runtime.client.workflow.getHandle(`ssh-session-${(await split.api.get('/sessions', split.adminToken)).body.items[0]?.id}`).terminate('test over').catch(() => undefined);
      await split.stop();
    }
  });
});

