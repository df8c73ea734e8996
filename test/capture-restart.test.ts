import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerExists, createTenant, docker, sleep, startTestStack, waitFor, waitForState, type TestStack } from './harness.js';

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => {
  await stack?.stop();
});

describe('the capture thread dying while a session is torn down', () => {
  it('does not let the container go before the next thread has read the rest of its output', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // Many short lines: the engine's log hands them to the capture over several seconds, so the
    // teardown is still waiting for the capture when its thread dies.
    const LINES = 200_000;
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sh', '-c', `seq 1 ${LINES}; sleep 600`], tty: false });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    await waitForState(stack, t.token, id, 'waiting_for_client');
    const streamOf = () => stack.runtime.db.selectFrom('session_streams').select(['bytes_captured', 'capture_ended_at'])
      .where('operation_id', '=', id).executeTakeFirst();
    await waitFor('the capture to follow the container', async () => Boolean(await streamOf()));

    expect((await stack.api.post(`/sessions/${id}/terminate`, t.token, {})).status).toBe(202);
    await waitForState(stack, t.token, id, 'ending');
    await sleep(300); // the teardown has stopped the container and is waiting for the capture
    const atKill = await streamOf();
    expect(atKill?.capture_ended_at, 'the capture must still be reading when its thread dies; print more lines').toBeFalsy();
    // As an uncaught error in the thread would: it is gone at once, with what it had not committed.
    await stack.runtime.capture!['worker']!.terminate();

    await waitForState(stack, t.token, id, 'ended', 90_000);
    const last = await stack.runtime.db.selectFrom('session_events').select('seq')
      .where('operation_id', '=', id).where('data', '=', `${LINES}\n`).executeTakeFirst();
    expect(last, 'the last line printed was captured').toBeDefined();
    const printed = Array.from({ length: LINES }, (_, i) => String(i + 1).length + 1).reduce((a, b) => a + b, 0);
    const stream = await streamOf();
    expect(Number(stream?.bytes_captured)).toBe(printed);
    expect(Number(stream?.bytes_captured)).toBeGreaterThan(Number(atKill?.bytes_captured ?? 0));
    expect(stream?.capture_ended_at).toBeTruthy();
  }, 180_000);
});

describe('stopping the host agent while its reconciler waits for a capture', () => {
  it('does not wait for the capture: the container stays for the next start to remove once captured', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // Enough lines that the capture is still reading them when the agent is stopped.
    const LINES = 1_000_000;
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sh', '-c', `seq 1 ${LINES}; sleep 600`], tty: false });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    const name = `essh-${id}`;
    try {
      await waitForState(stack, t.token, id, 'waiting_for_client');
      const streamOf = () => stack.runtime.db.selectFrom('session_streams').select(['capture_ended_at'])
        .where('operation_id', '=', id).executeTakeFirst();
      await waitFor('the capture to follow the container', async () => Boolean(await streamOf()));

      // Closed by hand: only the reconciler removes the container, after letting the capture finish.
      await stack.runtime.client.workflow.getHandle(`ssh-session-${id}`).terminate('test: removed by hand');
      const pass = stack.runtime.hostAgent!.reconcileOnce();
      await waitFor('the reconciler to stop the container and wait for the capture', async () =>
        !(await docker.getContainer(name).inspect()).State.Running, 30_000, 100);
      expect((await streamOf())?.capture_ended_at, 'the capture must still be reading; print more lines').toBeFalsy();

      const stoppingAt = Date.now();
      await stack.runtime.hostAgent!.stop();
      await pass;
      console.info(`host agent stopped in ${Date.now() - stoppingAt} ms while a capture was still reading`);
      expect(await containerExists(name), 'the container is left for the next start').toBe(true);
    } finally {
      await docker.getContainer(name).remove({ force: true }).catch(() => undefined);
    }
  }, 120_000);
});
