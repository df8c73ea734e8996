// Session output is deleted a while after the session ended, never before a drain has it.
import { beforeAll, describe, expect, it } from 'vitest';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { existsSync } from 'node:fs';
import { journalPath } from '../journal/writer.js';
import { createTenant, runInSession, sleep, useTestStack, waitFor } from './support/harness.js';

const RETENTION_S = 3;
const stack = useTestStack({ env: { ESSH_EVENT_RETENTION_S: String(RETENTION_S), ESSH_DRAIN_BACKOFF_CAP_S: '1' } });
const rx = useHttpsReceiver();
let drained: Awaited<ReturnType<typeof createTenant>>;
let undrained: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  drained = await createTenant(stack, { plan: 'scale' });
  undrained = await createTenant(stack, { plan: 'scale' });
  await addHttpsDrain(stack, rx, drained.account, 'slow-drain', '/ingest');
});

/** A session that printed `line` to its client through the portal, and ended. */
async function endedSession(t: typeof drained, line: string) {
  const r = await runInSession(stack, t, { command: ['sh', '-c', `echo ${line}; exit 0`] });
  expect(r.stdout.toString()).toBe(`${line}\n`);
  // The record says `ended` a moment before teardown writes the journal's `ended` record.
  await waitFor('the journal\'s end', async () => Boolean((await stack.runtime.db.selectFrom('session_journals').select('ended_at')
    .where('operation_id', '=', r.id).executeTakeFirst())?.ended_at));
  return r.id;
}

/** 1 while the session's journal is on its host (the stack's own data dir), 0 once retention deleted it. */
async function storedEvents(id: number) {
  return existsSync(journalPath(stack.dataDir, id)) ? 1 : 0;
}

describe('retention of session output', () => {
  it('deletes an ended session\'s output after the retention; its recording then says so with 410', async () => {
    const id = await endedSession(undrained, 'kept-for-a-while');
    expect(await storedEvents(id)).toBeGreaterThan(0);
    const rec = await stack.api.get(`/sessions/${id}/recording`, undrained.token);
    expect(rec.status).toBe(200);
    expect(String(rec.body)).toContain('kept-for-a-while');

    await waitFor('the output to be purged', async () => (await storedEvents(id)) === 0, 30_000, 500);
    const gone = await stack.api.get(`/sessions/${id}/recording`, undrained.token);
    expect(gone.status).toBe(410);
    expect(gone.body).toMatchObject({ error: 'gone' });
    expect(gone.body.message).toMatch(new RegExp(`recording of session ${id} was deleted.*kept for ${RETENTION_S} s.*ESSH_EVENT_RETENTION_S`));
  });

  it('keeps what a drain has not yet received past the retention, and deletes it once delivered', async () => {
    rx.answer = () => ({ status: 503, body: '{"error":"busy"}' });
    const id = await endedSession(drained, 'waits-for-the-drain');
    const stored = await storedEvents(id);
    expect(stored).toBeGreaterThan(0);
    // Well past the retention and a few purge passes: nothing may go while the drain lacks it.
    await sleep((RETENTION_S + 6) * 1000);
    expect(await storedEvents(id)).toBe(stored);

    rx.answer = () => ({ status: 200, body: '{}' });
    await waitFor('the drain to receive the session', async () =>
      eventsOf(rx).some((e) => e.operation_id === id && e.event === 'session_ended'), 30_000, 300);
    expect(eventsOf(rx).some((e) => e.operation_id === id && e.log === 'waits-for-the-drain')).toBe(true);
    await waitFor('the delivered output to be purged', async () => (await storedEvents(id)) === 0, 30_000, 500);
  });
});
