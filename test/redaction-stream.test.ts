// Redaction sees the session's output as a stream, not record by record (issue 18, hole 2): a secret
// printed in two writes a second apart, or typed at a prompt and echoed one character at a time, reaches
// neither the drain nor the recording in clear. Real stack, real portal sessions, real HTTPS drain.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, openSession, runInSession, sleep, startTestStack, waitFor, type TestStack } from './harness.js';
import { HttpsReceiver, eventsOf, selfSignedCert, type Cert } from './drains-receivers.js';

let stack: TestStack;
let cert: Cert;
let rx: HttpsReceiver;

beforeAll(async () => {
  stack = await startTestStack();
  cert = await selfSignedCert();
  rx = new HttpsReceiver(cert);
  await rx.up();
});
afterAll(async () => {
  await rx?.down();
  await stack?.stop();
  if (cert) await rm(cert.dir, { recursive: true, force: true });
});

/** A tenant with an HTTPS drain and a rule for sk_live_ keys. */
async function redactedTenant(path: string) {
  const tenant = await createTenant(stack, { plan: 'scale' });
  const d = await stack.api.post(`/accounts/${tenant.account}/log_drains`, stack.adminToken, {
    handle: 'https-drain', drain_type: 'https', url: `${rx.url}${path}`, ca_cert: cert.cert,
  });
  expect(d.status, JSON.stringify(d.body)).toBe(201);
  const r = await stack.api.post(`/accounts/${tenant.account}/redaction_rules`, stack.adminToken, { name: 'keys', pattern: 'sk_live_[A-Za-z0-9]+', replacement: '[KEY]' });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return tenant;
}

/** The session's output as the drain received it, event by event, once its session_ended event is in. */
async function drainedOutput(id: number): Promise<string[]> {
  const events = await waitFor(`the session_ended event of ${id}`, async () => {
    const all = eventsOf(rx).filter((e) => e.operation_id === id);
    return all.some((e) => e.event === 'session_ended') ? all : undefined;
  }, 60_000, 200);
  return events.filter((e) => e.event === undefined || e.stream === 'stdout' || e.stream === 'stderr')
    .filter((e) => e.stream !== 'lifecycle').sort((a, b) => a.seq - b.seq).map((e) => e.log as string);
}

/** The recording's output events' texts. */
async function recordedOutput(id: number, token: string): Promise<string[]> {
  const rec = await stack.api.get(`/sessions/${id}/recording`, token);
  expect(rec.status).toBe(200);
  return String(rec.body).trim().split('\n').slice(1).map((l) => JSON.parse(l) as [number, string, string])
    .filter((e) => e[1] === 'o').map((e) => e[2]);
}

describe('a secret split across output records', () => {
  it('printed in two writes a second apart is redacted in the drain and the recording', async () => {
    const t = await redactedTenant('/split');
    const run = await runInSession(stack, t, { command: ['sh', '-c', 'printf sk_li; sleep 1; printf ve_ABC123; echo; echo after'] });
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toString()).toContain('sk_live_ABC123'); // the user sees it; only what is shipped or recorded is redacted
    const drained = await drainedOutput(run.id);
    // Two events: the first write became an event of its own (a second without output).
    expect(drained.length, JSON.stringify(drained)).toBeGreaterThanOrEqual(2);
    expect(drained.join('')).toContain('[KEY]');
    expect(drained.join('|')).not.toMatch(/sk_li|ve_ABC|ABC123/);
    expect(drained).toContain('after');
    const recorded = await recordedOutput(run.id, t.token);
    expect(recorded.join('')).toContain('[KEY]');
    expect(recorded.join('|')).not.toMatch(/sk_li|ve_ABC|ABC123/);
    expect(recorded.join('')).toContain('after');
  }, 120_000);

  it('typed at a read prompt, echoed one character at a time, is redacted in the drain and the recording', async () => {
    const t = await redactedTenant('/typed');
    const s = await openSession(stack, t, { tty: true, command: ['sh', '-c', 'printf "key: "; read -r key; echo "got ${#key} characters"'] });
    await waitFor('the prompt', async () => s.stdout().toString().includes('key: '), 30_000, 50);
    // Slower than the journal's 500 ms partial-line cut: each echoed character is an event of its own.
    for (const ch of 'sk_live_ABC123') {
      const before = s.stdout().length;
      s.shell.channel.write(ch);
      await waitFor(`the echo of ${ch}`, async () => s.stdout().length > before, 15_000, 10);
      await sleep(600);
    }
    s.shell.channel.write('\r');
    const run = await s.done;
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toString()).toContain('got 14 characters');
    const drained = await drainedOutput(run.id);
    expect(drained.length, JSON.stringify(drained)).toBeGreaterThan(5);
    expect(drained.join('')).toContain('[KEY]');
    expect(drained.join('')).not.toMatch(/ABC|live/);
    expect(drained.join('')).toContain('got 14 characters');
    const recorded = await recordedOutput(run.id, t.token);
    expect(recorded.join('')).toContain('[KEY]');
    expect(recorded.join('')).not.toMatch(/ABC|live/);
  }, 120_000);
});
