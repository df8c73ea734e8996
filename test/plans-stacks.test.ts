import { describe, expect, it } from 'vitest';
import { containerExists, createTenant, DEMO_IMAGE, useTestStack, waitForState } from './support/harness.js';
import { sessionContainer } from './support/harness.js';

/** CONTRACT §8: each stack has max_session_duration_s (7 days by default), lower only on a dedicated stack. */

const SHORT = 'dedicated-short';
const stack = useTestStack({ hostStacks: ['local', SHORT] });




const seconds = (s: { created_at: string; expires_at: string }) => (Date.parse(s.expires_at) - Date.parse(s.created_at)) / 1000;

describe('stacks and their maximum session duration', () => {
  it('a shared stack keeps the 7-day default; asking it for less is refused with the fix', async () => {
    const plain = await stack.api.post('/stacks', stack.adminToken, { name: 'shared-eu' });
    expect(plain.status).toBe(201);
    expect(plain.body).toMatchObject({ max_session_duration_s: 604_800, dedicated: false });

    const lower = await stack.api.post('/stacks', stack.adminToken, { name: 'shared-us', max_session_duration_s: 3600 });
    expect(lower.status).toBe(422);
    expect(lower.body).toMatchObject({ error: 'invalid_request', message: expect.stringMatching(/Only a dedicated stack.*"dedicated": true/) });
    expect((await stack.api.get('/stacks/shared-us', stack.adminToken)).status).toBe(404);

    const shared = await stack.api.post('/stacks', stack.adminToken, { name: 'shared-ap', max_session_duration_s: 3600, dedicated: false });
    expect(shared.status).toBe(422);
  });

  it('a dedicated stack may set less, never more than 7 days', async () => {
    const ok = await stack.api.post('/stacks', stack.adminToken, { name: 'dedicated-acme', max_session_duration_s: 3600, dedicated: true });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ max_session_duration_s: 3600, dedicated: true });
    expect((await stack.api.get('/stacks/dedicated-acme', stack.adminToken)).body.max_session_duration_s).toBe(3600);

    const more = await stack.api.post('/stacks', stack.adminToken, { name: 'dedicated-long', max_session_duration_s: 604_801, dedicated: true });
    expect(more.status).toBe(422);
    expect(more.body.message).toMatch(/at most 604800/);
    for (const bad of [0, -5, 1.5, '60']) {
      const r = await stack.api.post('/stacks', stack.adminToken, { name: 'dedicated-bad', max_session_duration_s: bad, dedicated: true });
      expect(r.status, String(bad)).toBe(422);
      expect(r.body.message).toMatch(/body\.max_session_duration_s/);
    }
  });

  it("an app's sessions follow its stack: expires_at = created_at + the stack's duration, and it ends `expired`", async () => {
    expect((await stack.api.post('/stacks', stack.adminToken, { name: SHORT, max_session_duration_s: 5, dedicated: true })).status).toBe(201);
    const t = await createTenant(stack, { plan: 'scale' });
    // A dedicated stack serves only the account it is granted to (with it, the shared one it also uses).
    const granted = await stack.api.request('PATCH', `/accounts/${t.account}`, stack.adminToken, { stacks: ['local', SHORT] });
    expect(granted.status, JSON.stringify(granted.body)).toBe(200);
    const shortApp = await stack.api.post('/apps', stack.adminToken, { handle: `${t.app}-short`, account: t.account, stack: SHORT, image: DEMO_IMAGE });
    expect(shortApp.status).toBe(201);
    expect(shortApp.body.stack).toBe(SHORT);

    const onLocal = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sleep', '600'] });
    const onShort = await stack.api.post(`/apps/${t.app}-short/sessions`, t.token, { command: ['sleep', '600'] });
    expect(onLocal.status).toBe(201);
    expect(onShort.status).toBe(201);
    expect(onLocal.body.stack).toBe('local');
    expect(onShort.body.stack).toBe(SHORT);
    expect(seconds(onLocal.body)).toBe(604_800);
    expect(seconds(onShort.body)).toBe(5);

    const ended = await waitForState(stack, t.token, onShort.body.id, 'ended', 30_000);
    expect(ended.end_reason, JSON.stringify(ended)).toBe('expired');
    expect(Date.parse(ended.ended_at)).toBeGreaterThanOrEqual(Date.parse(onShort.body.expires_at));
    expect(await containerExists(sessionContainer(stack, onShort.body.id))).toBe(false);
    // The session on the 7-day stack is untouched by its neighbour's expiry.
    expect((await stack.api.get(`/sessions/${onLocal.body.id}`, t.token)).body.state).not.toBe('ended');
    await stack.api.post(`/sessions/${onLocal.body.id}/terminate`, t.token, {});
    await waitForState(stack, t.token, onLocal.body.id, 'ended');
  });

  it('only an operator creates stacks', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    const r = await stack.api.post('/stacks', t.token, { name: 'mine', max_session_duration_s: 60, dedicated: true });
    expect(r.status).toBe(403);
    expect(r.body.error).toBe('forbidden');
  });
});
