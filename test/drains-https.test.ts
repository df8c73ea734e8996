import { beforeAll, describe, expect, it } from 'vitest';
import { createTenant, openSession, runInSession, sleep, useTestStack, waitFor, waitForState } from './support/harness.js';
import { addHttpsDrain, PortalTerminal, useHttpsReceiver, sessionEventsAt, waitForEndedAt } from './support/drains-receivers.js';

const stack = useTestStack({ env: { ESSH_DRAIN_BACKOFF_CAP_S: '2' } });
const rx = useHttpsReceiver();
let tenant: Awaited<ReturnType<typeof createTenant>>;

const PASSWORD = 'hunter2-TOPSECRET';
const EVENT_FIELDS = ['@timestamp', 'time', 'log', 'stream', 'layer', 'app', 'app_id', 'source', 'container', 'host', 'offset', 'seq',
  'operation_id', 'operation_user_name', 'operation_user_email'];

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
  const admin = stack.adminToken;
  await addHttpsDrain(stack, rx, tenant.account, 'https-drain', '/ingest', admin);
  // A drain with session output switched off: nothing may reach its path (every request must be /ingest).
  const off = await stack.api.post(`/accounts/${tenant.account}/log_drains`, admin, {
    handle: 'sessions-off', drain_type: 'https', url: `${rx.url}/off`, ca_cert: rx.cert.cert, drain_ephemeral_sessions: false,
  });
  expect(off.status, JSON.stringify(off.body)).toBe(201);
  for (const rule of [{ name: 'cards', preset: 'card_number' }, { name: 'ssn', preset: 'us_ssn' }, { name: 'stripe', pattern: 'sk_live_[A-Za-z0-9]+' }]) {
    const r = await stack.api.post(`/accounts/${tenant.account}/redaction_rules`, admin, rule);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
});

/** A session of the app's shell with the user's terminal (80×24) attached through the portal, at its prompt. */
async function startSession() {
  const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const term = await PortalTerminal.open(r.body.connect, { cols: 80, rows: 24 });
  await term.waitFor(PROMPT).catch((err) => {
    term.close();
    throw err;
  });
  return { id: r.body.id as number, term };
}

const sessionEvents = (id: number) => sessionEventsAt(rx, id);
const waitForEnded = (id: number, timeoutMs?: number) => waitForEndedAt(rx, id, timeoutMs);

/** Every seq from 0 to the ended event's, each at least once (duplicates are allowed: at-least-once). */
function expectNoGaps(events: Record<string, any>[]) {
  const seqs = new Set(events.map((e) => e.seq as number));
  const max = Math.max(...seqs);
  const missing = [];
  for (let i = 0; i <= max; i++) if (!seqs.has(i)) missing.push(i);
  expect(missing).toEqual([]);
  return max;
}

/** A metric's value for one label, as Prometheus would scrape it from the API process's metrics listener. */
async function metric(name: string, label: string): Promise<number | undefined> {
  const text = await (await fetch(stack.runtime.metricsUrl)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(label));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}
const drainMetric = (name: string, drainId: number) => metric(name, `drain_id="${drainId}"`);

/** The demo image's shell prompt (busybox's line editor follows it with a cursor query and a redraw). */
const PROMPT = /:\/app[$#] /;

// Sessions printing through the SSH portal into their journals, shipped by the host's shipper.
describe('an HTTPS drain', () => {
  it('gets what the user saw with full metadata, seq without gaps, lifecycle events; no password, redacted secrets', async () => {
    const { id, term } = await startSession();
    try {
      term.type('echo "héllo wörld ✓ $((6*7))"\n');
      await term.waitFor('héllo wörld ✓ 42');
      term.type('read -s -p "Password: " PW; echo; echo "got ${#PW} chars"\n');
      // The prompt comes once echo is off; a moment more for a loaded machine.
      await term.waitFor('Password: ');
      await sleep(300);
      term.type(`${PASSWORD}\n`);
      await term.waitFor(`got ${PASSWORD.length} chars`);
      term.type('echo card 4111 1111 1111 1111 ssn 123-45-6789 key sk_live_abc123XYZ order 1234567890123\n');
      await term.waitFor('order 1234567890123\r\n');
      term.type('exit 5\n');
      expect(await term.exitCode).toBe(5);
      const ended = await waitForState(stack, tenant.token, id, 'ended');
      expect(ended).toMatchObject({ end_reason: 'exit', exit_code: 5 });
    } finally {
      term.close();
    }
    // Nothing of the password reached the terminal either.
    expect(term.output).not.toContain(PASSWORD);
    await waitForEnded(id);
    const events = sessionEvents(id);

    for (const e of events) {
      for (const f of EVENT_FIELDS) expect(e, `field ${f} in ${JSON.stringify(e)}`).toHaveProperty([f]);
      expect(e).toMatchObject({
        layer: 'ssh', source: 'ephemeral_session', app: tenant.app, operation_id: id,
        operation_user_name: tenant.user.name, operation_user_email: tenant.user.email,
      });
      expect(typeof e.app_id).toBe('number');
      expect(typeof e.offset).toBe('number');
      expect(e['@timestamp']).toBe(e.time);
      expect(Number.isNaN(Date.parse(e.time))).toBe(false);
      expect(e.container).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof e.host).toBe('string');
    }
    const max = expectNoGaps(events);
    const bySeq = new Map(events.map((e) => [e.seq, e]));
    expect(bySeq.get(0)).toMatchObject({ event: 'session_started', stream: 'lifecycle', container_size_mb: 1024 });
    expect(bySeq.get(0)!.log).toContain(tenant.user.email);
    expect(bySeq.get(max)).toMatchObject({ event: 'session_ended', end_reason: 'exit', exit_code: 5, ended_by: null });
    expect(bySeq.get(max)!.duration_s).toBeGreaterThan(0);

    const output = [...bySeq.values()].filter((e) => e.stream === 'stdout').sort((a, b) => a.seq - b.seq);
    const text = output.map((e) => e.log).join('\n');
    // Echoed input and the output, multibyte text intact.
    expect(text).toContain('echo "héllo wörld ✓ $((6*7))"');
    expect(text).toContain('héllo wörld ✓ 42');
    expect(text).toContain(`got ${PASSWORD.length} chars`);
    // Byte offsets grow with the output.
    for (let i = 1; i < output.length; i++) expect(output[i]!.offset).toBeGreaterThan(output[i - 1]!.offset);

    const everything = rx.requests.map((r) => r.body).join('\n');
    expect(everything).not.toContain(PASSWORD);
    expect(everything).not.toContain('4111 1111 1111 1111');
    expect(everything).not.toContain('123-45-6789');
    expect(everything).not.toContain('sk_live_abc123XYZ');
    expect(text).toContain('card [REDACTED CARD] ssn [REDACTED SSN] key [REDACTED] order 1234567890123');

    expect(rx.requests.length).toBeGreaterThan(0);
    for (const r of rx.requests) {
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['idempotency-key']).toMatch(/^essh-drain-\d+-(\d+\.\d+-\d+|[0-9a-f]{32})$/);
      expect(r.path).toBe('/ingest');
    }

    const drains = await stack.api.get(`/accounts/${tenant.account}/log_drains`, tenant.token);
    expect(drains.status).toBe(200);
    expect(drains.body.items[0].delivery).toMatchObject({ backlog_bytes: 0, failed_events: 0 });
    expect(drains.body.items[0].delivery.delivered_events).toBeGreaterThanOrEqual(max + 1);
    expect(drains.body.items[0].delivery.last_success_at).toBeTruthy();

    // The recording shows the same, with the same redactions and without the password, at the size of
    // the client's terminal (the program started when it attached).
    const rec = await stack.api.get(`/sessions/${id}/recording`, tenant.token);
    expect(rec.status).toBe(200);
    expect(rec.headers.get('content-type')).toMatch(/application\/x-asciicast/);
    const lines = String(typeof rec.body === 'string' ? rec.body : JSON.stringify(rec.body)).trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ version: 2, width: 80, height: 24 });
    const shown = lines.slice(1).map((l) => JSON.parse(l) as [number, string, string]).map((e) => e[2]).join('');
    expect(shown).toContain('héllo wörld ✓ 42');
    expect(shown).not.toContain(PASSWORD);
    expect(shown).not.toContain('4111 1111 1111 1111');
  });

  it('loses nothing while the drain is down for 30 s in the middle of a session', async () => {
    const session = await openSession(stack, tenant, {
      command: ['sh', '-c', 'i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); sleep 0.15; done; exit 0'],
    });
    const { id } = session;
    await waitFor('the first lines to arrive', async () => sessionEvents(id).some((e) => e.log === 'line 5'), 20_000, 100);
    await rx.down();
    const downAt = Date.now();
    // While it is down the drain shows why, and its backlog grows.
    const during = await waitFor('the drain to show the outage', async () => {
      const d = (await stack.api.get(`/accounts/${tenant.account}/log_drains`, stack.adminToken)).body.items[0];
      return d.delivery.backlog_bytes > 100 && /cannot reach/.test(d.delivery.last_error ?? '') ? d : undefined;
    }, 20_000, 500);
    expect(Date.parse(during.delivery.last_error_at)).toBeGreaterThanOrEqual(downAt - 1000);
    // So does /metrics, for an operator's alerting.
    expect(await drainMetric('essh_drain_backlog_bytes', during.id)).toBeGreaterThan(100);
    // The printing session is open, its client attached.
    expect(await metric('essh_sessions', 'state="active"')).toBeGreaterThanOrEqual(1);
    await sleep(30_000 - (Date.now() - downAt));
    await rx.up();
    const run = await session.done;
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toString()).toBe(Array.from({ length: 300 }, (_, i) => `line ${i}\n`).join(''));
    await waitForEnded(id, 60_000);
    const events = sessionEvents(id);
    expectNoGaps(events);
    const lines = new Set(events.map((e) => e.log));
    const missing = [];
    for (let i = 0; i < 300; i++) if (!lines.has(`line ${i}`)) missing.push(i);
    expect(missing).toEqual([]);
    const d = (await stack.api.get(`/accounts/${tenant.account}/log_drains`, stack.adminToken)).body.items[0];
    expect(d.delivery.backlog_bytes).toBe(0);
    expect(await drainMetric('essh_drain_backlog_bytes', d.id)).toBe(0);
    expect(await drainMetric('essh_drain_delivered_events_total', d.id)).toBe(d.delivery.delivered_events);
    expect(await drainMetric('essh_drain_last_success_timestamp_seconds', d.id)).toBe(Date.parse(d.delivery.last_success_at) / 1000);
  }, 120_000);

  it('ends with a session_ended event naming who terminated it, after the last output', async () => {
    const { id, term } = await startSession();
    try {
      term.type('echo before-terminate\n');
      await term.waitFor('before-terminate\r\n');
      const t = await stack.api.post(`/sessions/${id}/terminate`, tenant.token, { reason: 'lunch' });
      expect(t.status).toBe(202);
      await waitForState(stack, tenant.token, id, 'ended');
      // The terminal is told why, on a line of its own (the portal's, not the session's output).
      await term.waitFor(`essh: session ${id} terminated by ${tenant.user.email}: lunch`);
    } finally {
      term.close();
    }
    await waitForEnded(id);
    const events = sessionEvents(id);
    const max = expectNoGaps(events);
    const last = events.find((e) => e.seq === max)!;
    expect(last).toMatchObject({ event: 'session_ended', end_reason: 'terminated', end_message: 'lunch', ended_by: tenant.user.email, exit_code: null });
    expect(last.log).toContain(`by ${tenant.user.email}`);
    expect(events.some((e) => e.log === 'before-terminate' && e.seq < max)).toBe(true);
  });

  it('keeps stdout and stderr apart for a session without a TTY', async () => {
    const run = await runInSession(stack, tenant, { command: ['sh', '-c', 'echo out-line; echo err-line >&2; echo "out-2 ✓"; exit 0'] });
    expect(run.stdout.toString()).toBe('out-line\nout-2 ✓\n');
    expect(run.stderr.toString()).toBe('err-line\n');
    const { id } = run;
    await waitForEnded(id);
    const events = sessionEvents(id);
    expectNoGaps(events);
    const byLog = new Map(events.map((e) => [e.log, e]));
    expect(byLog.get('out-line')).toMatchObject({ stream: 'stdout' });
    expect(byLog.get('err-line')).toMatchObject({ stream: 'stderr' });
    expect(byLog.get('out-2 ✓')).toMatchObject({ stream: 'stdout' });
  });

  it('records a permanent refusal (4xx) on the drain instead of dropping it silently', async () => {
    rx.answer = () => ({ status: 400, body: '{"error":"schema mismatch"}' });
    try {
      const run = await runInSession(stack, tenant, { command: ['sh', '-c', 'echo refused-output; exit 0'] });
      expect(run.stdout.toString()).toBe('refused-output\n');
      const d = await waitFor('the refusal to be recorded', async () => {
        const r = (await stack.api.get(`/accounts/${tenant.account}/log_drains`, stack.adminToken)).body.items[0];
        return r.delivery.failed_events > 0 && r.delivery.backlog_bytes === 0 ? r : undefined;
      }, 20_000, 300);
      expect(d.delivery.last_error).toMatch(/HTTP 400/);
      expect(d.delivery.last_error_detail).toMatch(/schema mismatch/); // operators only
      const f = await stack.api.get(`/log_drains/${d.id}/failures`, tenant.token);
      expect(f.status).toBe(200);
      expect(f.body.items[0]).toMatchObject({ status: 400 });
      expect(f.body.items[0].events).toBeGreaterThan(0);
    } finally {
      rx.answer = () => ({ status: 200, body: '{}' });
    }
  });
});
