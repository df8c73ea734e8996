import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { LABELS } from '../lib/docker.js';
import {
  DEMO_IMAGE, containerExists, createTenant, docker, expectAllLinesCaptured, startPrintingSession, startTestStack, uniqueIdBase,
  waitFor, waitForState, type TestStack,
} from './harness.js';

const run = promisify(execFile);
let stack: TestStack;
const strays: string[] = [];

beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => {
  for (const name of strays) await docker.getContainer(name).remove({ force: true }).catch(() => undefined);
  await stack?.stop();
});

/** A container that looks like a session's to the reconciler, made behind essh's back. */
async function strayContainer(instanceId: string) {
  const operationId = uniqueIdBase();
  const name = `essh-stray-${operationId}`;
  strays.push(name);
  const c = await docker.createContainer({
    name,
    Image: DEMO_IMAGE,
    Cmd: ['sleep', '3600'],
    Labels: { [LABELS.session]: 'true', [LABELS.operationId]: String(operationId), [LABELS.instance]: instanceId },
    HostConfig: { Init: true },
  });
  await c.start();
  return name;
}

describe('the reconciler', () => {
  it('removes the container of a session terminated by hand (temporal workflow terminate) and closes its record', async () => {
    // One concurrent session: the second create below only succeeds once the first one's slot is free.
    const t = await createTenant(stack, { plan: 'development' });
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    await waitForState(stack, t.token, id, 'waiting_for_client');
    expect(await containerExists(`essh-${id}`)).toBe(true);

    const terminatedAt = Date.now();
    await run(toolPath('temporal'), [
      'workflow', 'terminate', '--address', stack.config.temporal.address!, '--namespace', stack.namespace,
      '--workflow-id', `ssh-session-${id}`, '--reason', 'operator removed it by hand',
    ]);
    // A terminated workflow runs no teardown of its own: only the reconciler can remove the container.
    await waitFor('the orphaned container to be removed', async () => !(await containerExists(`essh-${id}`)), 60_000, 250);
    const removedAfterMs = Date.now() - terminatedAt;
    expect(removedAfterMs).toBeLessThan(60_000);

    const ended = await waitForState(stack, t.token, id, 'ended', 60_000);
    expect(ended).toMatchObject({ end_reason: 'terminated', ended_by: 'temporal' });
    expect(ended.end_message).toMatch(/ended outside essh \(terminated\)/);
    const op = await stack.api.get(`/operations/${id}`, t.token);
    expect(op.body.status).toBe('succeeded');

    const again = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    await stack.api.post(`/sessions/${again.body.id}/terminate`, t.token, {});
    await waitForState(stack, t.token, again.body.id, 'ended');
  });

  it('lets the capture read all a hand-terminated session printed before it removes the container', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    // Still reaching the capture when the reconciler finds the orphan.
    const LINES = 200_000;
    const id = await startPrintingSession(stack, t, LINES);
    await stack.runtime.client.workflow.getHandle(`ssh-session-${id}`).terminate('test: removed by hand while printing');
    await waitFor('the orphaned container to be removed', async () => !(await containerExists(`essh-${id}`)), 60_000, 250);
    await expectAllLinesCaptured(stack, id, LINES);
  });

  it("removes this installation's container whose workflow never existed, and leaves another installation's alone", async () => {
    const ours = await strayContainer(stack.runtime.instanceId);
    const theirs = await strayContainer(randomUUID());

    await waitFor('the stray container of this installation to be removed', async () => !(await containerExists(ours)), 60_000, 250);
    // Two more full passes after the one that removed ours: the other installation's container survives them.
    await stack.runtime.hostAgent!.reconcileOnce();
    await stack.runtime.hostAgent!.reconcileOnce();
    const info = await docker.getContainer(theirs).inspect();
    expect(info.State.Running).toBe(true);
  });
});
