import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { LABELS } from '../lib/docker.js';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import {
  DEMO_IMAGE, containerExists, createTenant, docker, useTestStack, uniqueIdBase,
  waitFor, waitForState,
} from './support/harness.js';
import { sessionContainer } from './support/harness.js';

const run = promisify(execFile);
const stack = useTestStack();
const strays: string[] = [];

afterAll(async () => {
  for (const name of strays) await docker.getContainer(name).remove({ force: true }).catch(() => undefined);
});

/** A container that looks like a session's (or a pool's) to the reconciler, made behind essh's back. */
async function strayContainer(installation: string, kind: 'session' | 'pool' = 'session', host?: string) {
  const name = kind === 'session' ? `essh-${installation}-${uniqueIdBase()}` : `essh-${installation}-pool-${randomBytes(4).toString('hex')}`;
  strays.push(name);
  const c = await docker.createContainer({
    name,
    Image: DEMO_IMAGE,
    Cmd: ['sleep', '3600'],
    Labels: {
      [LABELS.instance]: installation,
      ...(host ? { [LABELS.host]: host } : {}),
      ...(kind === 'pool' ? { [LABELS.pool]: 'true', [LABELS.appId]: '999999999', [LABELS.stack]: 'local', [LABELS.settings]: 'x' } : {}),
    },
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
    expect(await containerExists(sessionContainer(stack, id))).toBe(true);

    const terminatedAt = Date.now();
    await run(toolPath('temporal'), [
      'workflow', 'terminate', '--address', stack.config.temporal.address!, '--namespace', stack.namespace,
      '--workflow-id', `ssh-session-${id}`, '--reason', 'operator removed it by hand',
    ]);
    // A terminated workflow runs no teardown of its own: only the reconciler can remove the container.
    await waitFor('the orphaned container to be removed', async () => !(await containerExists(sessionContainer(stack, id))), 60_000, 250);
    const removedAfterMs = Date.now() - terminatedAt;
    expect(removedAfterMs).toBeLessThan(60_000);

    const ended = await waitForState(stack, t.token, id, 'ended', 60_000);
    expect(ended).toMatchObject({ end_reason: 'terminated', ended_by: 'temporal' });
    expect(ended.end_message).toMatch(/ended outside essh \(terminated\)/);
    const op = await stack.api.get(`/operations/${id}`, t.token);
    expect(op.body.status).toBe('succeeded');
    // No teardown closed its journal either: the host agent does, with the end the record now says.
    await waitFor('its journal to be closed', async () => (await stack.runtime.db.selectFrom('session_journals').select('ended_at')
      .where('operation_id', '=', id).executeTakeFirstOrThrow()).ended_at !== null, 30_000, 250);
    const records = [];
    for await (const rec of readRecords(journalPath(stack.dataDir, id))) records.push(rec);
    expect(records.at(-1)?.type).toBe(RecordType.ended);
    expect(JSON.parse(records.at(-1)!.payload.toString('utf8'))).toMatchObject({ end_reason: 'terminated', ended_by: 'temporal', end_message: ended.end_message });

    const again = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    await stack.api.post(`/sessions/${again.body.id}/terminate`, t.token, {});
    await waitForState(stack, t.token, again.body.id, 'ended');
  });

  it("removes this installation's container whose workflow never existed, and leaves another installation's and another host's alone", async () => {
    const ours = await strayContainer(stack.runtime.installation.id);
    // A pool container of an app that no longer exists goes too (the warm pool's pass).
    const oursPool = await strayContainer(stack.runtime.installation.id, 'pool');
    const theirs = await strayContainer(randomBytes(4).toString('hex'));
    const theirsPool = await strayContainer(randomBytes(4).toString('hex'), 'pool');
    // Made by this host (its id on the label) it goes; made by another host of the stack on the same
    // engine (a host that died: its session ended `container_lost`), it waits for that host's return.
    const ownHost = await strayContainer(stack.runtime.installation.id, 'session', stack.runtime.config.hostId);
    const otherHost = await strayContainer(stack.runtime.installation.id, 'session', 'another-host');

    await waitFor('the stray container of this installation to be removed', async () => !(await containerExists(ours)), 60_000, 250);
    await waitFor('the stray pool container of this installation to be removed', async () => !(await containerExists(oursPool)), 60_000, 250);
    await waitFor('the stray container this host made to be removed', async () => !(await containerExists(ownHost)), 60_000, 250);
    // Two more full passes after the one that removed ours: the other installation's container survives them.
    await stack.runtime.hostAgent!.reconcileOnce();
    await stack.runtime.hostAgent!.reconcileOnce();
    await stack.runtime.pool!.refill();
    for (const name of [theirs, theirsPool, otherHost]) expect((await docker.getContainer(name).inspect()).State.Running, name).toBe(true);
  });
});
