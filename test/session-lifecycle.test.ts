import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { SessionsService } from '../services/sessions.js';
import { heartbeatSignal, sessionWorkflowId } from '../shapes/session-workflow.js';
import {
  containerExists, createTenant, docker, runInSession, sleep, useTestStack, waitFor, waitForState,
} from './support/harness.js';
import { sessionContainer } from './support/harness.js';

const run = promisify(execFile);
const stack = useTestStack({ hostStacks: ['local', 'short'] });
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  // `short` is a second stack (with a 6 s maximum) served by a host worker in this same process.
  tenant = await createTenant(stack, { plan: 'scale' });
});

async function createSession(body: object = {}, app = tenant.app, token = tenant.token) {
  const r = await stack.api.post(`/apps/${app}/sessions`, token, body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as { id: number; workflow_id: string; connect: { token: string } };
}

function heartbeat(id: number, connection = 'test-conn') {
  return stack.runtime.client.workflow.getHandle(sessionWorkflowId(id)).signal(heartbeatSignal, { connection_id: connection });
}

describe('a session ends for each CONTRACT reason and its container is removed', () => {
  it('exit: a command exiting 3 gives exit/3', async () => {
    // The command runs (by docker exec) once a client attaches: here the ssh2 client, through the portal.
    const r = await runInSession(stack, tenant, { command: ['sh', '-c', 'sleep 1; exit 3'] });
    const s = { id: r.id };
    expect(r.exitCode).toBe(3);
    const ended = r.ended;
    expect(ended.end_reason).toBe('exit');
    expect(ended.exit_code).toBe(3);
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
    const op = await stack.api.get(`/operations/${s.id}`, tenant.token);
    expect(op.body).toMatchObject({ id: s.id, type: 'execute', status: 'succeeded', end_reason: 'exit', exit_code: 3, session_id: s.id });
  });

  it('disconnect: heartbeats that stop end the session and remove the container', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    await heartbeat(s.id);
    const active = await waitForState(stack, tenant.token, s.id, 'active');
    expect(active.connected_at).toBeTruthy();
    // Keep it alive past the 4 s heartbeat timeout, then go silent.
    for (let i = 0; i < 4; i++) {
      await sleep(1500);
      await heartbeat(s.id);
      expect((await stack.api.get(`/sessions/${s.id}`, tenant.token)).body.state).toBe('active');
    }
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended.end_reason).toBe('disconnect');
    expect(ended.end_message).toMatch(/no heartbeat/);
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
  });

  it('disconnect: the clientDisconnected signal ends an active session at once', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    await heartbeat(s.id, 'c1');
    await waitForState(stack, tenant.token, s.id, 'active');
    await stack.runtime.client.workflow.getHandle(sessionWorkflowId(s.id)).signal('clientDisconnected', { connection_id: 'c1', reason: 'closed by client' });
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 10_000);
    expect(ended).toMatchObject({ end_reason: 'disconnect', end_message: 'closed by client' });
  });

  it('terminated through the API, by its owner', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    const r = await stack.api.post(`/sessions/${s.id}/terminate`, tenant.token, { reason: 'done for today' });
    expect(r.status).toBe(202);
    const ended = await waitForState(stack, tenant.token, s.id, 'ended');
    expect(ended).toMatchObject({ end_reason: 'terminated', end_message: 'done for today', ended_by: tenant.user.email });
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
  });

  it('terminated by an operator with the temporal CLI signal', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    await run(toolPath('temporal'), [
      'workflow', 'signal', '--address', stack.config.temporal.address!, '--namespace', stack.namespace,
      '--workflow-id', `ssh-session-${s.id}`, '--name', 'terminate',
      '--input', '{"reason":"maintenance","by":"ops@example.com"}',
    ]);
    const ended = await waitForState(stack, tenant.token, s.id, 'ended');
    expect(ended).toMatchObject({ end_reason: 'terminated', end_message: 'maintenance', ended_by: 'ops@example.com' });
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
    // The search attributes followed the state: the CLI finds it by them.
    await waitFor('visibility to show the ended session', async () => {
      const { stdout: out } = await run(toolPath('temporal'), [
        'workflow', 'list', '--address', stack.config.temporal.address!, '--namespace', stack.namespace,
        '--query', `EsshOperationId=${s.id} AND EsshState="ended" AND EsshEndReason="terminated"`, '--output', 'json',
      ]);
      return out.includes(`ssh-session-${s.id}`);
    }, 10_000, 500);
  });

  it('expired: a dedicated stack with a short maximum duration', async () => {
    const admin = stack.adminToken;
    const st = await stack.api.post('/stacks', admin, { name: 'short', max_session_duration_s: 6, dedicated: true });
    expect(st.status).toBe(201);
    const t = await createTenant(stack, { stackName: 'short', plan: 'growth' });
    const s = await createSession({}, t.app, t.token);
    await waitForState(stack, t.token, s.id, 'waiting_for_client');
    const created = await stack.api.get(`/sessions/${s.id}`, t.token);
    expect(Date.parse(created.body.expires_at) - Date.parse(created.body.created_at)).toBe(6000);
    // Active and heartbeating the whole time: expiry holds regardless of activity.
    const beating = setInterval(() => void heartbeat(s.id).catch(() => undefined), 1000);
    try {
      const ended = await waitForState(stack, t.token, s.id, 'ended', 20_000);
      expect(ended.end_reason).toBe('expired');
      expect(Date.parse(ended.ended_at)).toBeGreaterThanOrEqual(Date.parse(ended.expires_at));
    } finally {
      clearInterval(beating);
    }
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
  });

  it('connect_timeout: no client attaches in time', async () => {
    const impatient = new SessionsService({
      db: stack.runtime.db, engine: stack.runtime.engine, client: stack.runtime.client, instanceId: stack.runtime.instanceId, secrets: stack.runtime.secrets,
      timeouts: { ...stack.config.session, connectTimeoutS: 2 }, ssh: { publicHost: '127.0.0.1', port: 2222 },
    });
    const principal = (await import('../services/auth.js')).authenticate(stack.runtime.db, tenant.token);
    const s = await impatient.create(await principal, tenant.app, {});
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended.end_reason).toBe('connect_timeout');
    expect(ended.connected_at).toBeNull();
    const op = await stack.api.get(`/operations/${s.id}`, tenant.token);
    expect(op.body.status).toBe('failed');
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
  });

  it('provision_failed: a missing image, with a clear message', async () => {
    const t = await createTenant(stack, { image: 'essh/does-not-exist:1.0' });
    const s = await createSession({}, t.app, t.token);
    const ended = await waitForState(stack, t.token, s.id, 'ended');
    expect(ended.end_reason).toBe('provision_failed');
    expect(ended.end_message).toMatch(/image essh\/does-not-exist:1.0 is not on the stack's Docker host/);
    expect((await stack.api.get(`/operations/${s.id}`, t.token)).body.status).toBe('failed');
  });

  it('container_lost: docker rm -f from outside', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    await run('docker', ['rm', '-f', sessionContainer(stack, s.id)]);
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended.end_reason).toBe('container_lost');
    expect((await stack.api.get(`/operations/${s.id}`, tenant.token)).body.status).toBe('failed');
  });
});

describe('a container killed or stopped through the engine, from outside essh', () => {
  for (const how of [['kill'], ['stop', '-t', '1']]) {
    it(`docker ${how[0]} gives container_lost, not exit`, async () => {
      const s = await createSession();
      await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
      await run('docker', [...how, sessionContainer(stack, s.id)]);
      const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
      expect(ended.end_reason).toBe('container_lost');
      expect(ended.end_message).toMatch(/outside essh/);
      expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);
    });
  }

  it('a command that exits by itself after a signal from inside is still `exit`', async () => {
    const r = await runInSession(stack, tenant, { command: ['sh', '-c', 'sleep 1; kill -9 $$'] });
    expect(r.exitCode).toBe(137);
    const ended = r.ended;
    expect(ended.end_reason).toBe('exit');
    expect(ended.exit_code).toBe(137);
    expect(ended.end_message).toBeNull();
  });
});

describe('the container', () => {
  it('is configured like the app, hardened, and sized as asked', async () => {
    const s = await createSession({ container_size_mb: 256 });
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    const info = await docker.getContainer(sessionContainer(stack, s.id)).inspect();
    expect(info.HostConfig.Memory).toBe(256 * 1024 * 1024);
    expect(info.HostConfig.MemorySwap).toBe(256 * 1024 * 1024);
    expect(info.HostConfig.RestartPolicy?.Name).toBe('no');
    expect(info.HostConfig.Privileged).toBe(false);
    expect(info.HostConfig.SecurityOpt).toContain('no-new-privileges');
    expect(info.HostConfig.PidsLimit).toBeGreaterThan(0);
    expect(info.HostConfig.PortBindings ?? {}).toEqual({});
    expect(info.HostConfig.Binds ?? []).toEqual([]);
    // Its main process is the idle init, read-only like the relay and the SFTP server beside it (the host paths it sees); the program comes by exec.
    expect(info.Config.Entrypoint).toEqual(['/.essh/init']);
    expect(info.Mounts.map((m) => ({ dest: m.Destination, rw: m.RW })).sort((x, y) => x.dest.localeCompare(y.dest)))
      .toEqual([{ dest: '/.essh/init', rw: false }, { dest: '/.essh/relay', rw: false }, { dest: '/.essh/sftp', rw: false }]);
    expect(info.Name).toBe(`/essh-${stack.runtime.installation.id}-${s.id}`);
    expect(info.Config.WorkingDir).toBe('/app');
    expect(info.Config.Env).toEqual(expect.arrayContaining(['APP_ENV=test', 'DATABASE_URL=postgres://app@db/app']));
    expect(info.Config.Labels).toMatchObject({
      'essh.instance': stack.runtime.installation.id, 'essh.app': tenant.app, 'essh.account': tenant.account, 'essh.stack': 'local',
    });
    const session = (await stack.api.get(`/sessions/${s.id}`, tenant.token)).body;
    expect(session.container_id).toBe(info.Id);
    await stack.api.post(`/sessions/${s.id}/terminate`, tenant.token, {});
    await waitForState(stack, tenant.token, s.id, 'ended');
  });

  it('defaults to 1024 MB', async () => {
    const s = await createSession();
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    const info = await docker.getContainer(sessionContainer(stack, s.id)).inspect();
    expect(info.HostConfig.Memory).toBe(1024 * 1024 * 1024);
    await stack.api.post(`/sessions/${s.id}/terminate`, tenant.token, {});
    await waitForState(stack, tenant.token, s.id, 'ended');
  });
});
