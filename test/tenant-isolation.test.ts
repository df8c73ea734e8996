import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, docker, endAllSessions, startTestStack, waitFor, waitForState, type TestStack } from './harness.js';

/**
 * Tenant isolation (docs/threat-model.md): what an account admin, a member or an anonymous client can
 * and cannot reach. Each check runs through the real API and, where it is about the container, from
 * inside a real session container on the real engine.
 */

let stack: TestStack;
let a: Awaited<ReturnType<typeof createTenant>>;
let b: Awaited<ReturnType<typeof createTenant>>;
let adminOfA: string;

beforeAll(async () => {
  stack = await startTestStack();
  a = await createTenant(stack, { plan: 'growth' });
  b = await createTenant(stack, { plan: 'growth' });
  const u = await stack.api.post('/users', stack.adminToken, {
    name: 'Admin of A', email: `admin-${randomBytes(3).toString('hex')}@example.com`, role: 'account_admin', accounts: [a.account],
  });
  expect(u.status, JSON.stringify(u.body)).toBe(201);
  adminOfA = u.body.token;
});
afterAll(async () => {
  if (!stack) return;
  await endAllSessions(stack);
  await stack.stop();
}, 120_000);

/** Runs `script` in the session's container, as a process of that container would. */
async function inside(containerId: string, script: string): Promise<{ code: number; out: string }> {
  const exec = await docker.getContainer(containerId).exec({ Cmd: ['sh', '-c', script], AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  await new Promise((r) => stream.once('end', r));
  const { ExitCode } = await exec.inspect();
  // Multiplexed frames: 8-byte headers; the text is enough for the messages asserted here.
  return { code: ExitCode ?? -1, out: Buffer.concat(chunks).toString('latin1') };
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
