// The idle timeout of interactive sessions (issue 21 §3): a stack's or an account's `idle_timeout_s`
// ends a session whose client typed nothing and whose program printed nothing for that long, with end
// reason `idle`, after a warning on the client's terminal. Driven through the real OpenSSH client in a
// tmux terminal, the real portal, Temporal and Docker; the settings through the API.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEvents } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { createTenant, endAllSessions, sleep, startTestStack, waitForState, workflowBundle, type TestStack } from './support/harness.js';
import { Terminal, passwordOnly, q, sshArgs, writeSecretFile } from './support/portal-terminal.js';

/** The demo image's shell prompt. */
const PROMPT = /:\/app[$#] $/m;
/** The account's idle timeout: the warning comes after half of it (a timeout under two minutes). */
const IDLE_S = 6;
/** A stack whose own idle timeout is shorter than the account's, served by this same process. */
const IDLE_STACK = 'idle-short';
const IDLE_STACK_S = 4;

let stack: TestStack;
let dir: string;
let port: number;
const terminals: Terminal[] = [];

beforeAll(async () => {
  stack = await startTestStack({
    parts: { api: true, worker: true, hostStacks: ['local', IDLE_STACK], workflowBundle: workflowBundle(), portal: true },
  });
  port = stack.runtime.sshPort!;
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-idle-test-'));
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
  if (stack) await endAllSessions(stack);
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const patchAccount = (account: string, body: object) => stack.api.request('PATCH', `/accounts/${account}`, stack.adminToken, body);

/** A tenant whose account has an idle timeout of `seconds` (none: left unset, the default). */
async function tenantWithIdle(seconds?: number, opts: Parameters<typeof createTenant>[1] = {}) {
  const t = await createTenant(stack, { plan: 'scale', ...opts });
  if (seconds !== undefined) {
    const r = await patchAccount(t.account, { idle_timeout_s: seconds });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
  return t;
}

/** A new session of the tenant's app, attached by OpenSSH (`ssh -tt`, the token as password) in a tmux pane, at its prompt. */
async function sshSession(t: { app: string; token: string }) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const { id, connect } = r.body as { id: number; connect: { user: string; token: string } };
  const tokenFile = await writeSecretFile(dir, `token-${id}`, connect.token);
  const term = await Terminal.start(['sshpass', '-f', tokenFile, 'ssh', '-tt', ...sshArgs(port, passwordOnly), `${connect.user}@127.0.0.1`].map(q).join(' '));
  terminals.push(term);
  await term.waitForText(PROMPT);
  await waitForState(stack, t.token, id, 'active', 10_000);
  return { id, term };
}

async function sessionEnded(id: number) {
  const events: Record<string, unknown>[] = [];
  for await (const ev of readEvents(journalPath(stack.dataDir, id))) if (ev.kind === 'session_ended') events.push(ev.details);
  return events;
}

describe('setting it', () => {
  it('an operator sets an account\'s idle timeout with PATCH, GET shows it, 0 or null turns it off; it is audited', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    expect((await stack.api.get(`/accounts/${t.account}`, stack.adminToken)).body.idle_timeout_s).toBeNull();
    const set = await patchAccount(t.account, { idle_timeout_s: 300 });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body.idle_timeout_s).toBe(300);
    expect((await stack.api.get(`/accounts/${t.account}`, stack.adminToken)).body.idle_timeout_s).toBe(300);
    expect((await patchAccount(t.account, { idle_timeout_s: 0 })).body.idle_timeout_s).toBeNull();
    expect((await patchAccount(t.account, { idle_timeout_s: 60 })).body.idle_timeout_s).toBe(60);
    expect((await patchAccount(t.account, { idle_timeout_s: null })).body.idle_timeout_s).toBeNull();

    const audit = await stack.api.listAll<{ details: Record<string, unknown> }>(`/audit_events?account=${t.account}&action=account.updated`, stack.adminToken);
    expect(audit.map((e) => e.details.idle_timeout_s)).toEqual(expect.arrayContaining([{ from: null, to: 300 }, { from: 300, to: 0 }]));

    // The operator's alone: an account's own member may not.
    const member = await stack.api.request('PATCH', `/accounts/${t.account}`, t.token, { idle_timeout_s: 10 });
    expect(member.status).toBe(403);
  });

  it('bad values are refused with a sentence that says what to send', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    for (const [value, says] of [
      [-5, /idle_timeout_s may not be negative; 0 or null turns the idle timeout off/],
      [2.5, /idle_timeout_s is a whole number of seconds/],
      [604_801, /idle_timeout_s may be at most 604800 \(7 days, the longest a session lasts\)/],
      ['300', /idle_timeout_s is a number of seconds, or null for none/],
    ] as const) {
      const r = await patchAccount(t.account, { idle_timeout_s: value });
      expect(r.status, JSON.stringify(r.body)).toBe(422);
      expect(r.body.message).toMatch(says);
      expect(r.body.problems).toEqual([expect.stringMatching(/^body\.idle_timeout_s: /)]);
    }
    expect((await stack.api.get(`/accounts/${t.account}`, stack.adminToken)).body.idle_timeout_s).toBeNull();
    // A stack's may not outlast its sessions.
    const long = await stack.api.post('/stacks', stack.adminToken, { name: 'idle-too-long', dedicated: true, max_session_duration_s: 600, idle_timeout_s: 900 });
    expect(long.status).toBe(422);
    expect(long.body.message).toMatch(/idle_timeout_s \(900\) is longer than the stack's max_session_duration_s \(600\)/);
  });

  it('a stack takes one when it is created (POST /stacks), shown with it', async () => {
    const r = await stack.api.post('/stacks', stack.adminToken, { name: IDLE_STACK, idle_timeout_s: IDLE_STACK_S });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ name: IDLE_STACK, idle_timeout_s: IDLE_STACK_S });
    expect((await stack.api.get(`/stacks/${IDLE_STACK}`, stack.adminToken)).body.idle_timeout_s).toBe(IDLE_STACK_S);
    expect((await stack.api.get('/stacks/local', stack.adminToken)).body.idle_timeout_s).toBeNull();
  });
});

describe('a session left alone', () => {
  it('is warned on its terminal, then ends idle: the client exits and the record, the journal and the drains say why', async () => {
    const t = await tenantWithIdle(IDLE_S);
    const { id, term } = await sshSession(t);
    const warning = `essh: this session will end for inactivity in ${IDLE_S / 2} s (the idle timeout of account ${t.account} is ${IDLE_S} s) unless you type something.`;
    const message = `no input or output for ${IDLE_S} s (the idle timeout of account ${t.account})`;
    await term.waitForText(new RegExp(`^${escape(warning)}`, 'm'), 30_000);
    await term.waitForText(new RegExp(`^essh: session ${id} ended for inactivity: ${escape(message)}`, 'm'), 30_000);
    // OpenSSH itself exits: the portal closed the channel with an exit status.
    expect(await term.exitStatus(20_000)).toBe(1);
    const screen = await term.screen();
    expect(screen.indexOf('will end for inactivity')).toBeLessThan(screen.indexOf('ended for inactivity'));

    const ended = await waitForState(stack, t.token, id, 'ended', 30_000);
    expect(ended).toMatchObject({ end_reason: 'idle', end_message: message, ended_by: null, exit_code: null });
    const op = await stack.api.get(`/operations/${id}`, t.token);
    expect(op.body).toMatchObject({ status: 'succeeded', end_reason: 'idle' });
    // The journal's session_ended, which the drains ship, carries the reason as any other.
    expect(await sessionEnded(id)).toEqual([expect.objectContaining({ end_reason: 'idle', end_message: message })]);
  }, 120_000);

  it("the smaller of its stack's and its account's applies, and its message names whose", async () => {
    const t = await tenantWithIdle(IDLE_S * 10, { stackName: IDLE_STACK });
    const { id, term } = await sshSession(t);
    const message = `no input or output for ${IDLE_STACK_S} s (the idle timeout of stack ${IDLE_STACK})`;
    await term.waitForText(new RegExp(`^essh: session ${id} ended for inactivity: ${escape(message)}`, 'm'), 30_000);
    expect(await waitForState(stack, t.token, id, 'ended', 30_000)).toMatchObject({ end_reason: 'idle', end_message: message });
  }, 120_000);
});

describe('a session that is not idle, or has no idle timeout', () => {
  it('outlives twice the timeout while its user types or its program prints; a detached job and a session without the setting do too', async () => {
    const t = await tenantWithIdle(IDLE_S);
    const unset = await tenantWithIdle();
    const [typing, printing, silent] = await Promise.all([sshSession(t), sshSession(t), sshSession(unset)]);
    // A child shell, not the interactive one's own loop: BusyBox ash, interactive, let one Ctrl-C that
    // came between a loop's commands go (seen once in a loaded clean-clone run); a non-interactive sh dies of it.
    await printing.term.typeLine(`sh -c 'while true; do echo tick; sleep 1; done'`);
    // What the user types is neither echoed nor answered: only the input itself keeps this one alive.
    await typing.term.typeLine('stty -echo; echo reading; cat > /dev/null');
    await typing.term.waitForText(/^reading\s*$/m);
    const job = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sh', '-c', `sleep ${IDLE_S * 2 + 4}; echo done`], detach: true });
    expect(job.status, JSON.stringify(job.body)).toBe(201);
    await waitForState(stack, t.token, job.body.id, 'active', 30_000);

    // The user types something every two seconds, for more than twice the timeout.
    const until = Date.now() + IDLE_S * 2 * 1000 + 2000;
    for (let i = 0; Date.now() < until; i++) {
      await typing.term.typeLine(`typed-${i}`);
      await sleep(2000);
    }
    for (const s of [typing, printing, silent]) {
      const now = await stack.api.get(`/sessions/${s.id}`, stack.adminToken);
      expect(now.body, `session ${s.id}`).toMatchObject({ state: 'active', end_reason: null });
      expect(await s.term.screen()).not.toMatch(/ended for inactivity/);
    }
    // Nothing typed came back: the typing session had input only.
    expect(await typing.term.screen()).not.toMatch(/typed-/);
    // The one left silent had no timeout to warn of.
    expect(await silent.term.screen()).not.toMatch(/will end for inactivity/);

    // Then each ends the ordinary way.
    await printing.term.keys('C-c');
    await printing.term.waitForText(PROMPT);
    await typing.term.keys('C-d');
    await typing.term.typeLine('stty echo');
    for (const s of [typing, printing, silent]) await s.term.typeLine('exit 4');
    for (const s of [typing, printing, silent]) {
      expect(await s.term.exitStatus(20_000)).toBe(4);
      expect(await waitForState(stack, stack.adminToken, s.id, 'ended', 30_000)).toMatchObject({ end_reason: 'exit', exit_code: 4 });
    }
    expect(await waitForState(stack, t.token, job.body.id, 'ended', 60_000)).toMatchObject({ end_reason: 'exit', exit_code: 0, detached: true });
  }, 180_000);
});

function escape(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
