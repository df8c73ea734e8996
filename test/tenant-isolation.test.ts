import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { signKeyChallenge } from '../cli/keys.js';
import { createTenant, docker, useTestStack, waitFor, waitForState } from './support/harness.js';
import { generateKey } from './support/portal-terminal.js';

/**
 * Tenant isolation (docs/threat-model.md): what an account admin, a member or an anonymous client can
 * and cannot reach. Each check runs through the real API and, where it is about the container, from
 * inside a real session container on the real engine.
 */

const stack = useTestStack();
let a: Awaited<ReturnType<typeof createTenant>>;
let b: Awaited<ReturnType<typeof createTenant>>;
let adminOfA: string;

beforeAll(async () => {
  a = await createTenant(stack, { plan: 'growth' });
  b = await createTenant(stack, { plan: 'growth' });
  const u = await stack.api.post('/users', stack.adminToken, {
    name: 'Admin of A', email: `admin-${randomBytes(3).toString('hex')}@example.com`, role: 'account_admin', accounts: [a.account],
  });
  expect(u.status, JSON.stringify(u.body)).toBe(201);
  adminOfA = u.body.token;
});

/** Runs `script` in the session's container, as a process of that container would. */
async function inside(containerId: string, script: string): Promise<{ code: number; out: string }> {
  const exec = await docker.getContainer(containerId).exec({ Cmd: ['sh', '-c', script], AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  await new Promise((r) => stream.once('end', r));
  const { ExitCode } = await exec.inspect();
  // Without a TTY the engine multiplexes stdout and stderr in frames (an 8-byte header, then the payload).
  const all = Buffer.concat(chunks);
  const text: Buffer[] = [];
  for (let at = 0; at + 8 <= all.length; at += 8 + all.readUInt32BE(at + 4)) text.push(all.subarray(at + 8, at + 8 + all.readUInt32BE(at + 4)));
  return { code: ExitCode ?? -1, out: Buffer.concat(text).toString('latin1') };
}

async function liveSession(t: { app: string; token: string }) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const s = await waitForState(stack, t.token, r.body.id, 'waiting_for_client', 60_000);
  const info = await docker.getContainer(s.container_id).inspect();
  const nets = Object.values(info.NetworkSettings.Networks ?? {});
  return { id: s.id as number, containerId: s.container_id as string, info, ip: nets[0]?.IPAddress ?? '', gateway: nets[0]?.Gateway ?? '' };
}

describe('network', () => {
  it('host, none and container:… are refused for everyone, naming the field; other networks are for operators only', async () => {
    for (const network of ['host', 'none', 'container:abc123', 'HOST']) {
      for (const token of [adminOfA, stack.adminToken]) {
        const r = await stack.api.post('/apps', token, {
          handle: `net-${randomBytes(3).toString('hex')}`, account: a.account, stack: 'local', image: 'essh/demo:latest', network,
        });
        expect(r.status, `${network}: ${JSON.stringify(r.body)}`).toBe(400);
        expect(r.body.error).toBe('invalid_request');
        expect(r.body.message).toMatch(/network/);
      }
    }
    const byAdmin = await stack.api.post('/apps', adminOfA, {
      handle: `net-${randomBytes(3).toString('hex')}`, account: a.account, stack: 'local', image: 'essh/demo:latest', network: 'some-net',
    });
    expect(byAdmin.status, JSON.stringify(byAdmin.body)).toBe(403);
    expect(byAdmin.body.message).toMatch(/operator/);
    const byOperator = await stack.api.post('/apps', stack.adminToken, {
      handle: `net-${randomBytes(3).toString('hex')}`, account: a.account, stack: 'local', image: 'essh/demo:latest', network: 'some-net',
    });
    expect(byOperator.status, JSON.stringify(byOperator.body)).toBe(201);
  });

  it("sessions of two accounts cannot reach each other's containers, nor the host's loopback services", async () => {
    const sa = await liveSession(a);
    const sb = await liveSession(b);
    expect(sa.info.HostConfig.NetworkMode).not.toBe('host');
    expect(sa.ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // B listens; A tries to connect (busybox nc: -w is the connect timeout, non-zero on failure).
    const listener = await docker.getContainer(sb.containerId).exec({ Cmd: ['sh', '-c', 'while true; do nc -l -p 8080 -e true; done'] });
    await listener.start({ Detach: true });
    // The listener is really there: from B's own container it answers.
    await waitFor('the listener in B', async () => /rc=0/.test((await inside(sb.containerId, 'echo hi | nc -w 3 127.0.0.1 8080; echo "rc=$?"')).out));
    const fromA = await inside(sa.containerId, `echo hi | nc -w 3 ${sb.ip} 8080; echo "rc=$?"`);
    expect(fromA.out, 'A reached B').not.toMatch(/rc=0/);
    // The API listens on the host's loopback: neither the container's 127.0.0.1 nor the gateway leads there.
    const apiPort = new URL(stack.url).port;
    for (const host of ['127.0.0.1', sa.gateway]) {
      const r = await inside(sa.containerId, `echo GET | nc -w 3 ${host} ${apiPort}; echo "rc=$?"`);
      expect(r.out, `reached ${host}:${apiPort}`).not.toMatch(/rc=0/);
    }
  });
});

describe('stacks and images per account', () => {
  it('an app may use only the stacks and image repositories an operator granted its account', async () => {
    const dedicated = `ded-${randomBytes(3).toString('hex')}`;
    expect((await stack.api.post('/stacks', stack.adminToken, { name: dedicated, dedicated: true })).status).toBe(201);
    const toB = await stack.api.request('PATCH', `/accounts/${b.account}`, stack.adminToken, { stacks: ['local', dedicated] });
    expect(toB.status, JSON.stringify(toB.body)).toBe(200);
    expect(toB.body.stacks).toEqual([dedicated, 'local'].sort());
    // A dedicated stack serves one account: granting B's to A is a conflict.
    const toA = await stack.api.request('PATCH', `/accounts/${a.account}`, stack.adminToken, { stacks: [dedicated] });
    expect(toA.status, JSON.stringify(toA.body)).toBe(409);
    // A's admin can neither put an app on B's dedicated stack nor run an image A was not granted.
    const onB = await stack.api.post('/apps', adminOfA, { handle: `x-${randomBytes(3).toString('hex')}`, account: a.account, stack: dedicated, image: 'essh/demo:latest' });
    expect(onB.status, JSON.stringify(onB.body)).toBe(403);
    expect(onB.body.message).toMatch(new RegExp(`may not use stack ${dedicated}`));
    for (const image of ['busybox:latest', 'essh/demo-evil:latest', 'essh/demoX']) {
      const r = await stack.api.post('/apps', adminOfA, { handle: `x-${randomBytes(3).toString('hex')}`, account: a.account, stack: 'local', image });
      expect(r.status, `${image}: ${JSON.stringify(r.body)}`).toBe(403);
      expect(r.body.message).toMatch(/may not run image/);
    }
    // Nor change an existing app to such an image.
    const patched = await stack.api.request('PATCH', `/apps/${a.app}`, adminOfA, { image: 'busybox:latest' });
    expect(patched.status, JSON.stringify(patched.body)).toBe(403);
    // B, granted its dedicated stack, may use it.
    const bApp = await stack.api.post('/apps', stack.adminToken, { handle: `b-${randomBytes(3).toString('hex')}`, account: b.account, stack: dedicated, image: 'essh/demo:latest' });
    expect(bApp.status, JSON.stringify(bApp.body)).toBe(201);
    // A grant taken back takes effect at once: sessions of an app whose image is no longer granted are refused.
    const c = await createTenant(stack);
    expect((await stack.api.request('PATCH', `/accounts/${c.account}`, stack.adminToken, { image_prefixes: ['registry.example.com/'] })).status).toBe(200);
    const refused = await stack.api.post(`/apps/${c.app}/sessions`, c.token, {});
    expect(refused.status, JSON.stringify(refused.body)).toBe(403);
    expect(refused.body.message).toMatch(/may not run image essh\/demo/);
  });

  it('stack, network and warm_pool of an app are the operator\'s to change', async () => {
    for (const patch of [{ stack: 'local' }, { warm_pool: 1 }, { network: 'some-net' }]) {
      const r = await stack.api.request('PATCH', `/apps/${a.app}`, adminOfA, patch);
      expect(r.status, `${JSON.stringify(patch)}: ${JSON.stringify(r.body)}`).toBe(403);
      expect(r.body.message).toMatch(/operator/);
    }
    const env = await stack.api.request('PATCH', `/apps/${a.app}`, adminOfA, { env: { APP_ENV: 'patched' } });
    expect(env.status, JSON.stringify(env.body)).toBe(200);
    expect(env.body.env).toEqual({ APP_ENV: 'patched' });
  });
});

describe('containers', () => {
  it("above the plan's largest container size a session is refused with 422 naming it", async () => {
    for (const size of [8193, 65536]) {
      const r = await stack.api.post(`/apps/${a.app}/sessions`, a.token, { container_size_mb: size });
      expect(r.status, JSON.stringify(r.body)).toBe(422);
      expect(r.body.message).toMatch(/at most 8192 MB/);
    }
  });

  it('keep only the documented capabilities and their plan\'s CPUs, read from inside', async () => {
    const s = await liveSession(a);
    expect(s.info.HostConfig.NanoCpus).toBe(2e9); // growth: 2 CPUs
    const caps = await inside(s.containerId, 'grep -E "^Cap(Eff|Bnd)" /proc/self/status; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max');
    // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, NET_BIND_SERVICE (bits 0 1 3 4 5 6 7 10).
    expect(caps.out).toMatch(/CapEff:\s+00000000000004fb/);
    expect(caps.out).toMatch(/CapBnd:\s+00000000000004fb/);
    expect(caps.out).toMatch(/200000\s+100000|200000 100000/);
    // Raw sockets are gone with NET_RAW: busybox ping cannot open one.
    const ping = await inside(s.containerId, 'ping -c 1 -W 1 127.0.0.1; echo "rc=$?"');
    expect(ping.out).toMatch(/rc=[1-9]/);
  });
});

describe('per-account and per-user caps', () => {
  it('API tokens and SSH keys per user, drains and redaction rules per account: concurrent requests never pass the cap', async () => {
    const t = await createTenant(stack);
    // The user has its first token; 30 more asked at once: exactly the cap is in use afterwards.
    const tokens = await Promise.all(Array.from({ length: 30 }, (_, i) => stack.api.post(`/users/${t.user.id}/tokens`, t.token, { name: `t${i}` })));
    expect(tokens.filter((r) => r.status === 201)).toHaveLength(19);
    const refused = tokens.find((r) => r.status !== 201)!;
    expect(refused.status).toBe(409);
    expect(refused.body.message).toMatch(/20 API tokens in use.*revoke one/);
    // Revoking one makes room for one.
    const one = tokens.find((r) => r.status === 201)!;
    expect((await stack.api.delete(`/users/${t.user.id}/tokens/${one.body.id}`, t.token)).status).toBe(204);
    expect((await stack.api.post(`/users/${t.user.id}/tokens`, t.token, {})).status).toBe(201);

    // 25 keys, each with its proof made first, so that their registrations come at once.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-caps-'));
    const proven = await Promise.all(Array.from({ length: 25 }, async (_, i) => {
      const key = await generateKey(dir, `k${i}`);
      const issued = await stack.api.post(`/users/${t.user.id}/ssh_key_challenges`, t.token, { public_key: key.publicKey });
      return { public_key: key.publicKey, challenge: issued.body.challenge, signature: await signKeyChallenge(key.keyFile, issued.body.challenge) };
    }));
    const keys = await Promise.all(proven.map((body) => stack.api.post(`/users/${t.user.id}/ssh_keys`, t.token, body)));
    await rm(dir, { recursive: true, force: true });
    expect(keys.filter((r) => r.status === 201)).toHaveLength(20);
    expect(keys.find((r) => r.status !== 201)!.body.message).toMatch(/20 SSH keys/);

    const drains = await Promise.all(Array.from({ length: 25 }, (_, i) => stack.api.post(`/accounts/${t.account}/log_drains`, stack.adminToken, {
      handle: `d${i}`, drain_type: 'https', url: `https://127.0.0.1:9/ingest-${i}`,
    })));
    expect(drains.filter((r) => r.status === 201), JSON.stringify(drains.find((r) => r.status !== 201 && r.status !== 409)?.body)).toHaveLength(20);
    expect(drains.find((r) => r.status === 409)!.body.message).toMatch(/20 log drains/);

    const rules = await Promise.all(Array.from({ length: 25 }, (_, i) => stack.api.post(`/accounts/${t.account}/redaction_rules`, stack.adminToken, {
      name: `r${i}`, pattern: `secret-${i}-[a-z]+`,
    })));
    expect(rules.filter((r) => r.status === 201)).toHaveLength(20);
    expect(rules.find((r) => r.status === 409)!.body.message).toMatch(/20 redaction rules/);
  });
});
