import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { temporal } from '@temporalio/proto';
import { LABELS } from '../lib/docker.js';
import { heartbeatSignal, hostTaskQueue, sessionWorkflowId } from '../shapes/session-workflow.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { journalPath } from '../journal/writer.js';
import { HttpsReceiver, eventsOf, selfSignedCert } from './support/drains-receivers.js';
import { apiAndWorkflows,
  containerExists, createTenant, docker, runInSession, sleep, useTestStack, waitFor, waitForState,
} from './support/harness.js';
import { sessionContainer } from './support/harness.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

const stack = useTestStack({ parts: apiAndWorkflows() });
const hosts: WorkerProcess[] = [];

beforeAll(async () => {
  // This process runs the API and the main worker (workflows, records) but no host worker at all:
  // every container comes from one of the two host-worker processes below.
  for (const name of ['east', 'west', 'nowhere', 'late']) {
    const r = await stack.api.post('/stacks', stack.adminToken, { name });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
  // Each host a machine of its own as far as essh can tell: its own data dir (journals, portal host
  // key), the installation's database and secrets key.
  const secretsKey = (await readFile(path.join(stack.dataDir, 'secrets.key'), 'utf8')).trim();
  // Made in order: hostDirs[i] is the i-th host's (pushed from inside the parallel start below, the
  // order was whichever mkdtemp finished first, and the test once looked for east's journal in west's).
  for (const s of ['east', 'west']) hostDirs.push(await mkdtemp(path.join(os.tmpdir(), `essh-host-${s}-`)));
  hosts.push(
    ...(await Promise.all(
      ['east', 'west'].map(async (s, i) => {
        const dataDir = hostDirs[i]!;
        return startWorkerProcess(stack, {
          ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: s, ESSH_HOST_ID: `host-${s}`, ESSH_DATA_DIR: dataDir, ESSH_SECRETS_KEY: secretsKey,
        });
      }),
    )),
  );
}, 180_000);
afterAll(async () => {
  for (const h of hosts) await h.stop();
  for (const d of hostDirs) await rm(d, { recursive: true, force: true });
});
const hostDirs: string[] = [];

describe('two stacks served by two host workers', () => {
  it('sessions on both hosts attach through their own portal, are journaled there, reach a drain and serve their recording through the API', async () => {
    const cert = await selfSignedCert();
    const rx = new HttpsReceiver(cert);
    await rx.up();
    try {
      for (const [i, name] of ['east', 'west'].entries()) {
        const t = await createTenant(stack, { stackName: name });
        const drain = await stack.api.post(`/accounts/${t.account}/log_drains`, stack.adminToken, {
          handle: 'both-hosts', drain_type: 'https', url: `${rx.url}/ingest`, ca_cert: cert.cert,
        });
        expect(drain.status, JSON.stringify(drain.body)).toBe(201);
        const r = await runInSession(stack, t, { command: ['sh', '-c', `echo "hello from ${name}"`] });
        expect(r.stdout.toString()).toBe(`hello from ${name}\n`);
        // The API's connect block named that host's portal, and the journal is on that host.
        const journal = await stack.runtime.db.selectFrom('session_journals').select('host_id').where('operation_id', '=', r.id).executeTakeFirstOrThrow();
        expect(journal.host_id).toBe(`host-${name}`);
        await waitFor(`the journal in ${name}'s data dir`, async () => (await readFile(journalPath(hostDirs[i]!, r.id)).catch(() => null))?.includes(`hello from ${name}`));
        // The API (in this process, no host of its own) fetches the recording from the host.
        const rec = await stack.api.get(`/sessions/${r.id}/recording`, t.token);
        expect(rec.status).toBe(200);
        expect(String(rec.body)).toContain(`hello from ${name}`);
        // The host's shipper delivers the session to the account's drain.
        const events = await waitFor(`${name}'s events at the drain`, async () => {
          const mine = eventsOf(rx).filter((e) => e.operation_id === r.id);
          return mine.some((e) => e.event === 'session_ended') ? mine : undefined;
        }, 30_000, 250);
        expect(events.find((e) => e.log === `hello from ${name}`)).toMatchObject({ app: t.app, seq: 1 });
      }
    } finally {
      await rx.down();
    }
  });

  it("each session's container is created by its own stack's host worker", async () => {
    const sessions: { stack: string; id: number; token: string }[] = [];
    for (const name of ['east', 'west']) {
      const t = await createTenant(stack, { stackName: name });
      const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      sessions.push({ stack: name, id: r.body.id, token: t.token });
    }
    for (const s of sessions) {
      const ready = await waitForState(stack, s.token, s.id, 'waiting_for_client', 60_000);
      const info = await docker.getContainer(ready.container_id).inspect();
      expect(info.State.Running).toBe(true);
      expect(info.Config.Labels).toMatchObject({ [LABELS.stack]: s.stack, [LABELS.host]: `host-${s.stack}` });
    }
    // Each stack's task queue is polled by its own host process only (worker identity is pid@hostname).
    for (const [i, name] of ['east', 'west'].entries()) {
      const d = await stack.runtime.client.workflowService.describeTaskQueue({
        namespace: stack.namespace,
        taskQueue: { name: hostTaskQueue(name) },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
      const identities = d.pollers.map((p) => p.identity);
      expect(identities.length).toBeGreaterThan(0);
      expect(identities.every((id) => id?.startsWith(`${hosts[i]!.pid}@`)), identities.join(', ')).toBe(true);
    }
    for (const s of sessions) {
      await stack.api.post(`/sessions/${s.id}/terminate`, s.token, {});
      const ended = await waitForState(stack, s.token, s.id, 'ended', 30_000);
      expect(ended.end_reason).toBe('terminated');
      expect(await containerExists(ended.container_id)).toBe(false);
    }
  });

  it('a stack that no host worker serves leaves its session in provisioning', async () => {
    const t = await createTenant(stack, { stackName: 'nowhere' });
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    await sleep(5000);
    const s = (await stack.api.get(`/sessions/${id}`, t.token)).body;
    expect(s).toMatchObject({ state: 'provisioning', container_id: null });
    expect(await containerExists(sessionContainer(stack, id))).toBe(false);
    // Its provisioning activity waits for a host worker that never comes; an operator clears it.
    await stack.runtime.client.workflow.getHandle(sessionWorkflowId(id)).terminate('test: no host serves this stack');
  });

  it('a client that attached while the container was provisioned makes the session active once it is ready', async () => {
    // The portal attaches to a start-on-attach container as soon as it exists, so the first heartbeat
    // can come before the workflow has seen provisioning finish. Holding the stack's host worker back
    // makes that order certain.
    const t = await createTenant(stack, { stackName: 'late' });
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { start_on_connect: true });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    await stack.runtime.client.workflow.getHandle(sessionWorkflowId(id)).signal(heartbeatSignal, { connection_id: 'early-client' });
    expect((await stack.api.get(`/sessions/${id}`, t.token)).body.state).toBe('provisioning');
    hosts.push(await startWorkerProcess(stack, { ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'late', ESSH_HOST_ID: 'host-late' }));
    // No heartbeat follows the early one: the session goes active, then ends by silence after the
    // heartbeat timeout. Left waiting for a client, it would end only at the connect timeout.
    const ended = await waitForState(stack, t.token, id, 'ended', 60_000);
    expect(ended, JSON.stringify(ended)).toMatchObject({ end_reason: 'disconnect' });
    expect(ended.connected_at).toBeTruthy();
  });
});
