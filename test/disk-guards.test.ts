import { stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { journalPath } from '../journal/writer.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { createTenant, runInSession, useTestStack, waitFor } from './support/harness.js';

/**
 * A session cannot fill its host's disk with output (docs/threat-model.md): its journal stops at a
 * bound, and a host short of disk takes no new session.
 */

describe('the session journal', () => {
  const stack = useTestStack({ env: { ESSH_JOURNAL_MAX_MB: '1' } });
  const rx = useHttpsReceiver();

  it('stops at its bound: the client still gets everything, the drains get a truncation event and an incomplete end', async () => {
    const t = await createTenant(stack);
    await addHttpsDrain(stack, rx, t.account, 'bounded', '/ingest');
    const r = await runInSession(stack, t, { command: ['sh', '-c', 'i=0; while [ $i -lt 50000 ]; do echo "line $i of a session that prints more than its journal holds"; i=$((i+1)); done'] });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().split('\n').filter(Boolean)).toHaveLength(50000);
    expect(r.stdout.length).toBeGreaterThan(2 * 1024 * 1024);
    const size = (await stat(journalPath(stack.dataDir, r.id))).size;
    expect(size).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
    const events = await waitFor('the session_ended event at the drain', async () => {
      const mine = eventsOf(rx).filter((e) => e.operation_id === r.id);
      return mine.some((e) => e.event === 'session_ended') ? mine : undefined;
    }, 30_000, 250);
    const truncated = events.find((e) => e.event === 'output_truncated');
    expect(truncated, JSON.stringify(events.slice(-3))).toBeTruthy();
    expect(events.find((e) => e.event === 'session_ended')).toMatchObject({ output_complete: false, end_reason: 'exit', exit_code: 0 });
    // Nothing after the truncation but the end; seqs without gaps.
    const seqs = events.map((e) => e.seq as number).sort((a, b) => a - b);
    expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(events.filter((e) => e.seq > truncated!.seq).map((e) => e.event)).toEqual(['session_ended']);
  });
});

describe('a host short of disk', () => {
  // A threshold no disk meets: the host's own report of its free space is what refuses.
  const stack = useTestStack({ env: { ESSH_MIN_FREE_DISK_MB: String(1024 * 1024 * 1024) } });
  it('takes no new session: 503 with a sentence saying why', async () => {
    const t = await createTenant(stack);
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body).toMatchObject({ error: 'unavailable' });
    expect(r.body.message).toMatch(/low on disk \(\d+ MB free; it keeps 1073741824 MB free\)/);
    // Nothing was started and no slot is held.
    expect((await stack.api.get('/sessions', stack.adminToken)).body.items).toHaveLength(0);
  });
});
