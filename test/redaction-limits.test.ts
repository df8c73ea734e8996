// Redaction rules cannot cost other accounts anything (issue 18, hole 1): a rule is bounded when it is
// created, matching runs in worker threads with a budget per record, and a record a rule is too slow on
// is withheld, never shipped or recorded in clear. Real stack, real portal sessions, real HTTPS drain.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nowIso } from '../lib/db.js';
import { RULE_LIMITS } from '../drains/redaction.js';
import { createTenant, openSession, runInSession, startTestStack, waitFor, type TestStack } from './harness.js';
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

/** The issue's rule: 990 characters, 490 002 RE2 instructions, seconds per 16 KB. */
const ISSUE_RULE = `(?:${'\\S'.repeat(490)}){1000}`;

async function drainedTenant(path: string) {
  const tenant = await createTenant(stack, { plan: 'scale' });
  const d = await stack.api.post(`/accounts/${tenant.account}/log_drains`, stack.adminToken, {
    handle: 'https-drain', drain_type: 'https', url: `${rx.url}${path}`, ca_cert: cert.cert,
  });
  expect(d.status, JSON.stringify(d.body)).toBe(201);
  return tenant;
}
const ofSession = (id: number) => eventsOf(rx).filter((e) => e.operation_id === id);
const endedEvent = (id: number) => waitFor(`the session_ended event of ${id}`, async () => ofSession(id).find((e) => e.event === 'session_ended'), 60_000, 200);

describe('redaction rules are bounded', () => {
  it('refuses the issue\'s rule, and one within the size limit that is too slow, with a 422 naming the limit', async () => {
    const t = await createTenant(stack);
    const big = await stack.api.post(`/accounts/${t.account}/redaction_rules`, stack.adminToken, { name: 'issue', pattern: ISSUE_RULE });
    expect(big.status, JSON.stringify(big.body)).toBe(422);
    expect(big.body.message).toMatch(new RegExp(`compiles to 490002 RE2 instructions, more than the ${RULE_LIMITS.programSize}.*fewer or smaller counted repetitions`));
    // 502 instructions, but every byte of 16 KB of non-space output keeps 500 threads alive.
    const slow = await stack.api.post(`/accounts/${t.account}/redaction_rules`, stack.adminToken, { name: 'slow', pattern: '\\S{500}' });
    expect(slow.status, JSON.stringify(slow.body)).toBe(422);
    expect(slow.body.message).toMatch(new RegExp(`took \\d+ ms on 16 KB .* more than the ${RULE_LIMITS.worstCaseMs} ms a rule may take`));
    const ok = await stack.api.post(`/accounts/${t.account}/redaction_rules`, stack.adminToken, { name: 'tokens', pattern: 'tok_[A-Za-z0-9]{24}' });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body).toMatchObject({ status: 'active', last_error: null, withheld_records: 0 });
    const list = await stack.api.get(`/accounts/${t.account}/redaction_rules`, t.token);
    expect(list.body.items.map((r: { name: string }) => r.name)).toEqual(['tokens']);
  });

  it('withholds a record a rule takes longer than its budget on: the drain and the recording never see it in clear', async () => {
    const t = await drainedTenant('/withheld');
    // As stored before rules were bounded (the API refuses it now).
    const acc = await stack.runtime.db.selectFrom('accounts').select('id').where('handle', '=', t.account).executeTakeFirstOrThrow();
    const rule = await stack.runtime.db.insertInto('redaction_rules').values({
      account_id: Number(acc.id), name: 'legacy', pattern: ISSUE_RULE, preset: null, replacement: '[X]', created_at: nowIso(), last_error: null, last_error_at: null,
    }).returning('id').executeTakeFirstOrThrow();
    const run = await runInSession(stack, t, { command: ['sh', '-c', 'echo clear-text-zq81; echo also-clear-zq82'] });
    expect(run.exitCode).toBe(0);
    await endedEvent(run.id);
    const outputs = ofSession(run.id).filter((e) => e.stream === 'stdout');
    expect(outputs.length).toBeGreaterThan(0);
    for (const e of outputs) expect(e.log).toMatch(new RegExp(`^\\[output withheld: redaction rule ${rule.id} `));
    // (The session_started event carries the command, which is not output.)
    expect(JSON.stringify(outputs)).not.toMatch(/zq8[12]/);
    const rec = await stack.api.get(`/sessions/${run.id}/recording`, t.token);
    expect(rec.status).toBe(200);
    expect(String(rec.body)).toContain(`[output withheld: redaction rule ${rule.id}`);
    expect(String(rec.body)).not.toMatch(/zq8[12]/);
    // Its account's admins see why, and the operators' metrics count it (by rule id, never the account's name).
    const shown = (await stack.api.get(`/accounts/${t.account}/redaction_rules`, stack.adminToken)).body.items[0];
    expect(shown).toMatchObject({ id: Number(rule.id), status: 'over_budget' });
    expect(shown.last_error).toMatch(/RE2 instructions|longer than/);
    expect(shown.withheld_records).toBeGreaterThan(0);
    const metrics = await (await fetch(stack.runtime.metricsUrl)).text();
    expect(metrics).toMatch(new RegExp(`essh_redaction_withheld_records_total\\{rule_id="${rule.id}"\\} [1-9]`));
  }, 120_000);

  it('another account\'s slowest allowed rule on its printing session does not stop a session from echoing or end it', async () => {
    const a = await drainedTenant('/slow-a');
    const b = await drainedTenant('/bystander-b');
    // The slowest of these the limits let through on this machine: a rule at the edge of what is allowed.
    let accepted: string | undefined;
    for (const pattern of ['[A-Za-z0-9]{120}', '[A-Za-z0-9]{80}', '[A-Za-z0-9]{40}', '[A-Za-z0-9]{20}']) {
      const r = await stack.api.post(`/accounts/${a.account}/redaction_rules`, stack.adminToken, { name: 'slow', pattern });
      if (r.status === 201) {
        accepted = pattern;
        break;
      }
      expect(r.status, JSON.stringify(r.body)).toBe(422);
    }
    expect(accepted).toBeDefined();
    // A prints 16 KB lines of letters, what keeps the rule busiest, for a while.
    const printer = await openSession(stack, a, {
      command: ['sh', '-c', "i=0; while [ $i -lt 200 ]; do head -c 16000 /dev/zero | tr '\\0' a; echo; i=$((i+1)); done"],
    });
    const typist = await openSession(stack, b, { tty: true });
    await waitFor('B\'s prompt', async () => typist.stdout().length > 0, 30_000, 50);
    // B types while A prints and A's drain redacts: every keystroke comes back.
    for (let k = 0; k < 20; k++) {
      const before = typist.stdout().length;
      typist.shell.channel.write('x');
      await waitFor(`echo of keystroke ${k}`, async () => typist.stdout().length > before, 15_000, 5);
    }
    typist.shell.channel.write('\x15exit\n');
    const [pa, pb] = await Promise.all([printer.done, typist.done]);
    expect(pa.exitCode).toBe(0);
    expect(pb.exitCode).toBe(0);
    for (const run of [pa, pb]) expect(run.ended.end_reason, JSON.stringify(run.ended)).toBe('exit');
    // A's lines went through its rule: every one redacted, none withheld.
    const aEnded = await endedEvent(pa.id);
    expect(aEnded.end_reason).toBe('exit');
    const aLines = ofSession(pa.id).filter((e) => e.stream === 'stdout');
    expect(aLines.length).toBeGreaterThanOrEqual(200);
    expect(aLines.every((e) => !/a{120}/.test(e.log) && !e.log.startsWith('[output withheld'))).toBe(true);
    expect((await endedEvent(pb.id)).end_reason).toBe('exit');
  }, 240_000);
});
