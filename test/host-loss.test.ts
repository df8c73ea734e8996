// A host killed for good (issue 19 part 4): its sessions end `container_lost`, naming the host and its
// last report, through the `worker` role's host-loss sweep (worker/host-loss-sweep.ts) and the workflow's
// `hostLost` signal; their workflows close without waiting on the dead host's queue; when the host comes
// back with the same id and data dir, its reconciler removes the containers it left and closes their
// journals, and nothing is resurrected or ended twice. The API and the workflows run in this process;
// the host (host worker, portal, agent) in a process of its own, which is SIGKILLed.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { RecordType } from '../journal/format.js';
import { loadConfig } from '../lib/config.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { sessionWorkflowId, type SessionResult } from '../shapes/session-workflow.js';
import { containerExists, createTenant, openSession, waitFor, sessionContainer, waitForState } from './support/harness.js';
import { useStackWithHostProcess } from './support/worker-process.js';

// Short, so that the test does not wait the production minute; the sweep's bound is the same sum.
const STALE_S = 12;
const SWEEP_S = 2;

// The sessions run on the file's own host process: it ends them before it stops that host.
const hosted = useStackWithHostProcess({
  idPrefix: 'lost',
  env: { ESSH_HOST_STALE_S: String(STALE_S), ESSH_HOST_LOSS_SWEEP_S: String(SWEEP_S) },
});
const stack = hosted.stack;

const row = (id: number) => stack.runtime.db.selectFrom('operations').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

async function journalRecords(id: number) {
  const records = [];
  for await (const r of readRecords(journalPath(stack.dataDir, id))) records.push(r);
  return records;
}

it('a host killed for good: its sessions end container_lost naming it, their workflows close; back again, it removes what it left', async () => {
  const hostId = hosted.hostEnv.ESSH_HOST_ID!;
  const t = await createTenant(stack, { plan: 'scale' });
  // One attached through the host's portal by the ssh2 client, one waiting for its client.
  const attached = await openSession(stack, t, { tty: true });
  const a = await waitForState(stack, t.token, attached.id, 'active', 60_000);
  const created = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const b = await waitForState(stack, t.token, created.body.id, 'waiting_for_client', 60_000);
  const sessions = [a, b].map((s) => ({ id: s.id as number, container: s.container_id as string }));
  const journals = await stack.runtime.db.selectFrom('session_journals').select(['operation_id', 'host_id'])
    .where('operation_id', 'in', sessions.map((s) => s.id)).execute();
  expect(journals.map((j) => j.host_id)).toEqual([hostId, hostId]);

  const note = path.join(stack.dataDir, 'attached', String(sessions[0]!.id));
  expect(existsSync(note), 'the portal noted the attached client').toBe(true);
  await hosted.host!.kill('SIGKILL');
  const lastSeenAt = (await stack.runtime.db.selectFrom('hosts').select('seen_at').where('host_id', '=', hostId).executeTakeFirstOrThrow()).seen_at;

  const ended = await Promise.all(sessions.map((s) => waitForState(stack, t.token, s.id, 'ended', (STALE_S + SWEEP_S + 60) * 1000)));
  const leftAs = 'its container could not be removed and will be when the host returns';
  // The waiting session had no ending before the host's loss; the attached one's client went silent with
  // the host, so its heartbeat timeout may have ended it first, its teardown then waiting on the dead host.
  expect(ended[1]).toMatchObject({ end_reason: 'container_lost', end_message: `host ${hostId} stopped reporting at ${lastSeenAt}; ${leftAs}` });
  expect(ended[0].end_reason).toBe('container_lost');
  const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  expect(ended[0].end_message).toMatch(new RegExp(`^host ${escaped(hostId)} stopped reporting at ${escaped(lastSeenAt)}(; the session was ending \\(disconnect: [^)]*\\))?; ${leftAs}$`));
  console.info(
    `host loss: sessions ended ${ended.map((e) => ((Date.parse(e.ended_at) - Date.parse(lastSeenAt)) / 1000).toFixed(1)).join(' s, ')} s after ` +
      `the host's last report (stale after ${STALE_S} s, sweep every ${SWEEP_S} s); attached one: ${ended[0].end_message}`,
  );

  // Closed, with nothing pending; no teardown asked of the dead host for the waiting session, and the
  // attached one's, if its ending had scheduled it, cancelled.
  for (const s of sessions) {
    const handle = stack.runtime.client.workflow.getHandle(sessionWorkflowId(s.id));
    const d = await handle.describe();
    expect(d.status.name).toBe('COMPLETED');
    expect(d.raw.pendingActivities ?? []).toEqual([]);
    expect(((await handle.result()) as SessionResult).end_reason).toBe('container_lost');
    const events = (await handle.fetchHistory()).events ?? [];
    const endSession = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'endSession');
    const cancelRequested = events.filter((e) => e.activityTaskCancelRequestedEventAttributes);
    if (s.id === sessions[1]!.id) expect(endSession).toEqual([]);
    expect(cancelRequested.length).toBe(endSession.length);
    expect(events.some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'hostLost')).toBe(true);
  }
  // Nobody could remove the containers: they wait for their host.
  for (const s of sessions) expect(await containerExists(s.container), `container of session ${s.id}`).toBe(true);
  const before = await Promise.all(sessions.map((s) => row(s.id)));

  // The host comes back with the same id and data dir: its reconciler removes the containers, closes the
  // journals with the end the workflow recorded, and its portal's reattach window lets the noted client go.
  await hosted.restartHost();
  for (const s of sessions) {
    await waitFor(`the container of session ${s.id} to be removed`, async () => !(await containerExists(s.container)), 60_000, 500);
  }
  await waitFor('the journals to be closed', async () => {
    const open = await stack.runtime.db.selectFrom('session_journals').select('operation_id')
      .where('operation_id', 'in', sessions.map((s) => s.id)).where('ended_at', 'is', null).execute();
    return open.length === 0;
  }, 30_000);
  for (const [i, s] of sessions.entries()) {
    const records = await journalRecords(s.id);
    expect(records.filter((r) => r.type === RecordType.ended)).toHaveLength(1);
    expect(records.at(-1)?.type).toBe(RecordType.ended);
    expect(JSON.parse(records.at(-1)!.payload.toString('utf8'))).toMatchObject({ end_reason: 'container_lost', end_message: ended[i].end_message });
  }
  await waitFor('the portal to drop its note of the attached client', async () => !existsSync(note), 30_000, 500);
  // Still ended, once: the same record, no container made again.
  expect(await Promise.all(sessions.map((s) => row(s.id)))).toEqual(before);
  for (const s of sessions) expect(await containerExists(sessionContainer(stack, s.id)), `a container named for session ${s.id}`).toBe(false);
}, 300_000);

it('a stale time shorter than two reports is refused at start, with the sentence that says why', () => {
  expect(() => loadConfig({ ESSH_HOST_STALE_S: '20', ESSH_RECONCILE_INTERVAL_S: '15' })).toThrow(
    'ESSH_HOST_STALE_S (20) must be at least twice ESSH_RECONCILE_INTERVAL_S (15), how often hosts report: a live host that missed one report would otherwise be taken for lost and its sessions ended.',
  );
  expect(loadConfig({}).hostLoss).toEqual({ staleS: 45, sweepIntervalS: 10 });
});
