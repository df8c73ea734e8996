import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { afterAll, expect, it } from 'vitest';
import { describeQuery, heartbeatSignal, hostOwnTaskQueue, sessionWorkflowId } from '../shapes/session-workflow.js';
import { containerExists, createTenant, docker, sleep, useTestStack, waitFor, waitForState } from './support/harness.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

// The heartbeat timeout outlasts the worker's absence (kill + restart), and the test heartbeats for
// longer than it after the restart: the session can then only still be active if the new worker
// processes the heartbeats.
const HEARTBEAT_TIMEOUT_S = 30;

// This process only serves the API; workflows and container activities run in the child worker.
const stack = useTestStack({ parts: { api: true }, env: { ESSH_HEARTBEAT_TIMEOUT_S: String(HEARTBEAT_TIMEOUT_S) } });
const workers: WorkerProcess[] = [];

afterAll(async () => {
  for (const w of workers) await w.stop();
});

const workerEnv = (id: string) => ({ ESSH_WORKER_ROLES: 'main,host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: id });

it('a worker killed mid-session and started again: the session goes on, then ends and cleans up', async () => {
  const first = await startWorkerProcess(stack, workerEnv('worker-1'));
  workers.push(first);
  const t = await createTenant(stack);
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const id = r.body.id as number;
  const handle = stack.runtime.client.workflow.getHandle(sessionWorkflowId(id));

  await waitForState(stack, t.token, id, 'waiting_for_client', 60_000);
  await handle.signal(heartbeatSignal, { connection_id: 'ssh-1' });
  const active = await waitForState(stack, t.token, id, 'active');
  const containerId = active.container_id as string;
  expect(containerId).toBeTruthy();

  let accepted = 0;
  let rejected = 0;
  const beat = () => handle.signal(heartbeatSignal, { connection_id: 'ssh-1' }).then(() => accepted++, () => rejected++);
  const beating = setInterval(() => void beat(), 1000);
  try {
    await first.kill('SIGKILL');
    const killedAt = Date.now();
    const acceptedBeforeRestart = accepted;
    await sleep(3000);
    // Temporal holds the signals while no worker runs; the container is untouched.
    expect(accepted).toBeGreaterThan(acceptedBeforeRestart);
    expect((await docker.getContainer(containerId).inspect()).State.Running).toBe(true);

    // The same host restarted, with its id: the session was placed on its queue (docs/fleet.md), and under
    // another id the first would be a lost host once silent for ESSH_HOST_STALE_S (45 s), whose sessions the
    // sweep ends (test/host-loss.test.ts).
    const second = await startWorkerProcess(stack, workerEnv('worker-1'));
    workers.push(second);
    const downMs = Date.now() - killedAt;
    console.info(`worker down for ${downMs} ms (kill, 3 s pause, restart)`);
    expect(downMs, 'the worker must come back within the heartbeat timeout for this test to mean anything').toBeLessThan(
      HEARTBEAT_TIMEOUT_S * 1000,
    );

    const d = await handle.query(describeQuery);
    expect(d).toMatchObject({ state: 'active', container_id: containerId, connected_at: active.connected_at, connections: ['ssh-1'] });

    // Longer than the heartbeat timeout since the restart: only the new worker's handling of the
    // heartbeats keeps the session alive.
    await sleep((HEARTBEAT_TIMEOUT_S + 3) * 1000);
    expect((await stack.api.get(`/sessions/${id}`, t.token)).body.state).toBe('active');
    expect((await handle.query(describeQuery)).state).toBe('active');
    expect(rejected).toBe(0);
  } finally {
    clearInterval(beating);
  }

  const term = await stack.api.post(`/sessions/${id}/terminate`, t.token, { reason: 'after the restart' });
  expect(term.status).toBe(202);
  const ended = await waitForState(stack, t.token, id, 'ended', 30_000);
  expect(ended).toMatchObject({ end_reason: 'terminated', end_message: 'after the restart', container_id: containerId });
  expect(await containerExists(containerId)).toBe(false);
  expect((await handle.result()).end_reason).toBe('terminated');
}, 180_000);

it('a host lost with the provisioning in hand: the session placed on it ends container_lost naming it, and the next goes to a live host', async () => {
  // Only the processes of this test serve the stack's queues from here on.
  for (const w of workers.splice(0)) await w.stop();
  const secretsKey = (await readFile(path.join(stack.dataDir, 'secrets.key'), 'utf8')).trim();
  // Each host its own machine as far as essh can tell (scale-out.test.ts): its own data dir.
  const dirs: string[] = [];
  const hostEnv = async (id: string) => {
    dirs.push(await mkdtemp(path.join(os.tmpdir(), `essh-${id}-`)));
    return { ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: id, ESSH_SECRETS_KEY: secretsKey, ESSH_DATA_DIR: dirs.at(-1)! };
  };
  workers.push(await startWorkerProcess(stack, { ESSH_WORKER_ROLES: 'main' }));
  const lost = await startWorkerProcess(stack, await hostEnv('host-lost'));
  workers.push(lost);
  // Its workers start polling just after it says it is ready: frozen before its first poll on its own
  // queue, it would never be handed the task.
  await waitFor("host-lost's poll on its own queue", async () => (await stack.runtime.client.workflowService.describeTaskQueue({
    namespace: stack.namespace, taskQueue: { name: hostOwnTaskQueue('local', 'host-lost') },
    taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  })).pollers.length > 0, 30_000, 250);
  // Frozen, not gone: its poll is still open at the server, which hands it the task and counts it as
  // started; the process never runs it, as with a host whose machine died under it.
  lost.signal('SIGSTOP');
  try {
    const t = await createTenant(stack);
    // worker-1 of the test before, stopped a moment ago, counts as live until 60 s after its last
    // report; with both empty, placement takes the first by id: host-lost.
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    const handle = stack.runtime.client.workflow.getHandle(sessionWorkflowId(id));
    await waitFor('the provisioning to be started by the frozen host', async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      return pending.some((a) => a.activityType?.name === 'provisionContainer' &&
        a.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED);
    }, 30_000, 250);
    // Then gone for good, and another host of the stack up.
    await lost.kill('SIGKILL');
    workers.push(await startWorkerProcess(stack, await hostEnv('host-alive')));

    // The heartbeat timeout (30 s) ends the lost attempt, and the next waits on the lost host's own
    // queue (at most a minute); before that, the host-loss sweep (worker/host-loss-sweep.ts) sees the
    // host silent past ESSH_HOST_STALE_S (45 s) with a session placed on it and never provisioned, and
    // ends it naming the host.
    const ended = await waitForState(stack, t.token, id, 'ended', 120_000);
    expect(ended.end_reason).toBe('container_lost');
    expect(ended.end_message).toMatch(/^host host-lost stopped reporting at /);

    // The lost host has not reported for longer than 60 s by now: the next session goes to the live one.
    const next = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(next.status, JSON.stringify(next.body)).toBe(201);
    const row = await stack.runtime.db.selectFrom('operations').select('host_id').where('id', '=', next.body.id).executeTakeFirstOrThrow();
    expect(row.host_id).toBe('host-alive');
    await waitForState(stack, t.token, next.body.id, 'waiting_for_client', 60_000);
    expect((await stack.api.post(`/sessions/${next.body.id}/terminate`, t.token, {})).status).toBe(202);
    const done = await waitForState(stack, t.token, next.body.id, 'ended', 60_000);
    expect(await containerExists(done.container_id as string)).toBe(false);
  } finally {
    await lost.kill('SIGKILL');
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}, 240_000);
