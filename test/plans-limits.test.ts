import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { sessionWorkflowId } from '../shapes/session-workflow.js';
import { createTenant, startTestStack, useTestStack, waitFor, waitForState, type ApiResponse, type TestStack, endAllSessions } from './support/harness.js';

/**
 * CONTRACT §8 under concurrency: parallel creates never exceed an account's limit, a slot is free as
 * soon as its session has ended, and a process restart in the middle of a burst leaks no slot.
 */

const stack = useTestStack({ env: { ESSH_OPERATION_SETTLE_S: '2' } });


const sleeper = { command: ['sleep', '600'] };

async function burst(s: TestStack, app: string, token: string, n: number): Promise<ApiResponse[]> {
  return Promise.all(Array.from({ length: n }, () => s.api.post(`/apps/${app}/sessions`, token, sleeper)));
}


/** An open record with no workflow, as a process that died right after the insert leaves it. */
async function insertOrphan(s: TestStack, t: { account: string; app: string; user: { id: number } }) {
  const db = s.runtime.db;
  const acc = await db.selectFrom('accounts').select('id').where('handle', '=', t.account).executeTakeFirstOrThrow();
  const app = await db.selectFrom('apps').select('id').where('handle', '=', t.app).executeTakeFirstOrThrow();
  const now = new Date().toISOString();
  const row = await db.insertInto('operations').values({
    type: 'execute', account_id: acc.id, app_id: app.id, user_id: t.user.id, stack: 'local', command: null,
    container_size_mb: 1024, state: 'provisioning', status: 'queued', created_at: now, updated_at: now, expires_at: now,
  }).returning('id').executeTakeFirstOrThrow();
  return { accountId: Number(acc.id), orphanId: Number(row.id) };
}

function expectExactly(results: ApiResponse[], limit: number) {
  const created = results.filter((r) => r.status === 201);
  const refused = results.filter((r) => r.status !== 201);
  expect(created.length, JSON.stringify(refused.find((r) => r.status !== 429)?.body ?? '')).toBe(limit);
  const ids = created.map((r) => r.body.id as number).sort((a, b) => a - b);
  for (const r of refused) {
    expect(r.status).toBe(429);
    expect(r.body.error).toBe('plan_limit');
    expect(r.body.limit).toBe(limit);
    // The refusal names exactly the sessions holding the slots, in its details and its message.
    expect([...r.body.active_sessions].sort((a: number, b: number) => a - b)).toEqual(ids);
    for (const id of ids) expect(r.body.message).toContain(`session ${id}`);
    expect(r.body.message).toMatch(/End one \(essh terminate ID\)/);
  }
  return ids;
}

describe('plan limits hold under concurrent creates', () => {
  it('50 parallel creates with a limit of 1: exactly one 201, 49 × 429 naming it', async () => {
    const t = await createTenant(stack, { plan: 'scale', max: 1 });
    const ids = expectExactly(await burst(stack, t.app, t.token, 50), 1);
    expect(ids).toHaveLength(1);
  });

  it('50 parallel creates on the growth plan (10): exactly ten', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    expect((await stack.api.get(`/accounts/${t.account}`, stack.adminToken)).body.max_concurrent_sessions).toBe(10);
    expectExactly(await burst(stack, t.app, t.token, 50), 10);
  });

  it('20 parallel creates on the default development plan: exactly one', async () => {
    const t = await createTenant(stack, { plan: 'development' });
    expectExactly(await burst(stack, t.app, t.token, 20), 1);
  });

  it('accounts do not share slots: two accounts at their limits side by side', async () => {
    const [a, b] = await Promise.all([createTenant(stack, { plan: 'scale', max: 2 }), createTenant(stack, { plan: 'scale', max: 3 })]);
    const [ra, rb] = await Promise.all([burst(stack, a.app, a.token, 15), burst(stack, b.app, b.token, 15)]);
    expectExactly(ra, 2);
    expectExactly(rb, 3);
  });

  it('a slot is free again as soon as its session has ended', async () => {
    const t = await createTenant(stack, { plan: 'development' });
    const first = await stack.api.post(`/apps/${t.app}/sessions`, t.token, sleeper);
    expect(first.status).toBe(201);
    expect((await stack.api.post(`/apps/${t.app}/sessions`, t.token, sleeper)).status).toBe(429);
    expect((await stack.api.post(`/sessions/${first.body.id}/terminate`, t.token, {})).status).toBe(202);
    await waitForState(stack, t.token, first.body.id, 'ended', 20_000);
    // Right after state=ended, no waiting period.
    const next = await stack.api.post(`/apps/${t.app}/sessions`, t.token, sleeper);
    expect(next.status, JSON.stringify(next.body)).toBe(201);
  });
});

describe('a restart in the middle of a burst leaks no slot', () => {
  it('stop the runtime mid-burst, start a new one on the same database and namespace: slots stay consistent', async () => {
    const limit = 5;
    // The first runtime's reconciler waits long enough never to close anything before the restart.
    const first = await startTestStack({ env: { ESSH_OPERATION_SETTLE_S: '600' } });
    let second: TestStack | undefined;
    try {
      const t = await createTenant(first, { plan: 'scale', max: limit });
      // The worst moment to die is between the insert's commit and the workflow's start: a record
      // that holds a slot with no workflow behind it. Leave one such record, as that crash would.
      const { accountId, orphanId } = await insertOrphan(first, t);

      // Fire the burst, and stop the whole process's runtime (API, workers, DB pool) while it runs.
      const inFlight = Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          sleep(i * 15).then(() => first.api.post(`/apps/${t.app}/sessions`, t.token, sleeper))),
      );
      await waitFor('a few sessions of the burst', async () =>
        (await first.runtime.db.selectFrom('operations').select('id').execute()).length >= 3, 10_000, 5);
      await first.runtime.stop();
      const outcomes = await inFlight;
      const created = outcomes.filter((o) => o.status === 'fulfilled' && o.value.status === 201).length;
      const cut = outcomes.filter((o) => o.status === 'rejected' || (o.status === 'fulfilled' && o.value.status >= 500)).length;
      // The orphan holds one slot.
      expect(created).toBeLessThanOrEqual(limit - 1);
      expect(cut, 'the restart must interrupt part of the burst').toBeGreaterThan(0);

      second = await startTestStack({ namespace: first.namespace, reuse: first, env: { ESSH_OPERATION_SETTLE_S: '2' } });
      const s2 = second;
      const openRows = () => s2.runtime.db.selectFrom('operations').select(['id', 'state']).where('account_id', '=', accountId)
        .where('state', '!=', 'ended').execute();
      expect((await openRows()).length).toBeLessThanOrEqual(limit);

      // Every open record is backed by a running workflow: rows whose workflow never started were
      // closed by the reconciler (after the settle window), so none holds a slot for nothing.
      await waitFor('every open record to have a running workflow', async () => {
        for (const row of await openRows()) {
          const d = await s2.runtime.client.workflow.getHandle(sessionWorkflowId(Number(row.id))).describe().catch(() => undefined);
          if (d?.status.name !== 'RUNNING') return false;
        }
        return true;
      }, 30_000, 500);

      const orphan = await s2.runtime.db.selectFrom('operations').select(['state', 'end_reason', 'end_message'])
        .where('id', '=', orphanId).executeTakeFirstOrThrow();
      expect(orphan).toEqual({ state: 'ended', end_reason: 'provision_failed', end_message: 'the session workflow does not exist' });

      // And the slots are exactly the limit again: end everything, then a new burst gets exactly the limit.
      await endAllSessions(s2);
      const again = await burst(s2, t.app, t.token, 20);
      expectExactly(again, limit);
    } finally {
      if (second) {
        await endAllSessions(second);
        await second.stop();
      }
      await first.stop();
    }
  }, 150_000);
});
