import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaptureAgent } from '../drains/capture.js';
import { LABELS } from '../lib/docker.js';
import { createLogger } from '../lib/log.js';
import {
  DEMO_IMAGE, captureOf, containerExists, createTenant, docker, expectAllLinesCaptured, sleep, startPrintingSession, startTestStack,
  waitFor, waitForState, type TestStack,
} from './harness.js';

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => {
  await stack?.stop();
});

describe('a capture that begins on a container with output in its log, which then stops', () => {
  it('reads all of it: the log is read again once the container has stopped', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // A session whose own container never starts (nobody attaches): its record is what this capture writes to.
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { start_on_connect: true, tty: false });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    // Labelled for an agent of its own, so that the stack's capture leaves it alone.
    const instanceId = `late-capture-${randomUUID()}`;
    const LINES = 200_000;
    const container = await docker.createContainer({
      name: `essh-late-capture-${id}`, Image: DEMO_IMAGE, Cmd: ['sh', '-c', `seq 1 ${LINES}; sleep 600`], StopSignal: 'SIGHUP',
      Labels: { [LABELS.session]: 'true', [LABELS.operationId]: String(id), [LABELS.instance]: instanceId }, HostConfig: { Init: true },
    });
    const agent = new CaptureAgent({
      docker, db: stack.runtime.db, engine: stack.runtime.engine, instanceId, intervalS: 3600, log: createLogger('silent'),
    });
    try {
      await container.start();
      await sleep(300); // the output is in the engine's log before anyone follows it (an agent that restarted)
      await agent.start(); // its first scan follows the container's log from the start
      await sleep(200);
      // dockerd ends a follower that is still behind when the container stops (measured: every time).
      await container.stop({ t: 10 });
      expect(await agent.waitForCaptureEnd(id, 60_000)).toBe(true);
      await expectAllLinesCaptured(stack, id, LINES);
    } finally {
      await agent.stop();
      await container.remove({ force: true }).catch(() => undefined);
      await stack.api.post(`/sessions/${id}/terminate`, t.token, {});
    }
  }, 120_000);
});

describe('the capture thread dying while a session is torn down', () => {
  it('does not let the container go before the next thread has read the rest of its output', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // The teardown is still waiting for the capture of these when its thread dies.
    const LINES = 200_000;
    const id = await startPrintingSession(stack, t, LINES);
    const streamOf = () => captureOf(stack, id);
    await waitFor('the capture to follow the container', async () => Boolean(await streamOf()));

    expect((await stack.api.post(`/sessions/${id}/terminate`, t.token, {})).status).toBe(202);
    await waitForState(stack, t.token, id, 'ending');
    await sleep(300); // the teardown has stopped the container and is waiting for the capture
    const atKill = await streamOf();
    expect(atKill?.capture_ended_at, 'the capture must still be reading when its thread dies; print more lines').toBeFalsy();
    // As an uncaught error in the thread would: it is gone at once, with what it had not committed.
    await stack.runtime.capture!['worker']!.terminate();

    await waitForState(stack, t.token, id, 'ended', 90_000);
    await expectAllLinesCaptured(stack, id, LINES);
    expect(Number((await streamOf())?.bytes_captured)).toBeGreaterThan(Number(atKill?.bytes_captured ?? 0));
  }, 180_000);
});

describe('stopping the host agent while its reconciler waits for a capture', () => {
  it('does not wait for the capture: the container stays for the next start to remove once captured', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // Enough lines that the capture is still reading them when the agent is stopped.
    const id = await startPrintingSession(stack, t, 1_000_000);
    const name = `essh-${id}`;
    try {
      const streamOf = () => captureOf(stack, id);
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
