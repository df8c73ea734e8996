import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, startTestStack, waitFor, waitForState, type TestStack, endAllSessions } from './harness.js';

/**
 * Whatever bytes a session prints, its output is stored and served on either database: a NUL (which
 * PostgreSQL's text type refuses) and bytes that are not UTF-8 must not stop the capture.
 */

let stack: TestStack;
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  stack = await startTestStack();
  tenant = await createTenant(stack, { plan: 'scale' });
});
afterAll(async () => {
  if (!stack) return;
  await endAllSessions(stack);
  await stack.stop();
}, 120_000);

describe('output bytes that are not text', () => {
  it(`a NUL and invalid UTF-8 are captured, the lines after them too (${process.env.ESSH_TEST_DATABASE_URL ? 'PostgreSQL' : 'SQLite'})`, async () => {
    const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {
      command: ['sh', '-c', "printf 'before\\000after\\n'; printf '\\377\\376 not utf-8\\n'; echo last line; sleep 1; exit 0"],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.id as number;
    await waitForState(stack, tenant.token, id, 'ended', 60_000);
    const text = await waitFor('the recording to hold the last line', async () => {
      const rec = await stack.api.get(`/sessions/${id}/recording`, tenant.token);
      return rec.status === 200 && typeof rec.body === 'string' && rec.body.includes('last line') ? rec.body : undefined;
    }, 30_000, 500);
    const output = text.split('\n').slice(1).filter(Boolean).map((l) => JSON.parse(l) as [number, string, string]).map((e) => e[2]).join('');
    expect(output).toMatch(/before(\u0000|\uFFFD)after/);
    expect(output).toContain(' not utf-8');
    expect(output).toContain('last line');
  });
});
