// End to end: sessions printing through the exec portal into their journals, shipped by the host's
// shipper to a real HTTPS receiver, and served as recordings.
import { describe, expect, it } from 'vitest';
import { createTenant, runInSession, waitFor, useTestStack } from './support/harness.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';

const stack = useTestStack();
const rx = useHttpsReceiver();

describe('a session printing through the portal', () => {
  it('reaches the drain, every seq from session_started to session_ended, and its recording', async () => {
    const tenant = await createTenant(stack, { plan: 'scale' });
    await addHttpsDrain(stack, rx, tenant.account, 'e2e', '/e2e');
    const run = await runInSession(stack, tenant, {
      command: ['sh', '-c', 'i=0; while [ $i -lt 200 ]; do echo "line $i"; i=$((i+1)); done; echo "to stderr" >&2; exit 3'],
    });
    expect(run.exitCode).toBe(3);
    const events = await waitFor('the session_ended event', async () => {
      const all = eventsOf(rx).filter((e) => e.operation_id === run.id);
      return all.some((e) => e.event === 'session_ended') ? all : undefined;
    }, 30_000, 200);
    const seqs = new Set(events.map((e) => e.seq as number));
    const max = Math.max(...seqs);
    for (let i = 0; i <= max; i++) expect(seqs.has(i), `seq ${i}`).toBe(true);
    const bySeq = new Map(events.map((e) => [e.seq, e]));
    expect(bySeq.get(0)).toMatchObject({ event: 'session_started', app: tenant.app, operation_user_email: tenant.user.email });
    expect(bySeq.get(max)).toMatchObject({ event: 'session_ended', end_reason: 'exit', exit_code: 3, output_complete: true });
    for (let i = 0; i < 200; i++) expect(events.some((e) => e.log === `line ${i}` && e.stream === 'stdout'), `line ${i}`).toBe(true);
    expect(events.find((e) => e.log === 'to stderr')).toMatchObject({ stream: 'stderr' });
    expect(events.find((e) => e.log === 'line 0')!.container).toMatch(/^[0-9a-f]{64}$/);
    const rec = await stack.api.get(`/sessions/${run.id}/recording`, tenant.token);
    expect(rec.status).toBe(200);
    expect(String(rec.body)).toContain('line 199');
  });
});
