// Observers of a live session (issue 21 §3): `ssh watch-<id>@portal` with a registered key and
// `essh watch ID` follow a session's output read-only. Driven through the real OpenSSH client (the owner
// with `ssh -tt` in a tmux terminal, the observer with `ssh -tt watch-<id>@…` in another), the CLI, the
// real portal, Temporal and Docker: the observer sees what was printed and what is printed, what it
// types never reaches the program, the owner is told when an observer joins and leaves, who may not
// watch is refused, each joining and leaving is a `session_observed` drain event and a recording
// marker, and the observer's connection ends with the session. The console's live view (Chromium, driven
// by playwright-core) is an observer too.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { createTenant, waitFor, waitForState, useTestStack } from './support/harness.js';
import { Terminal, generateKey, keyOnly, passwordOnly, q, registerKey, runToEnd, sshArgs, writeSecretFile } from './support/portal-terminal.js';

const stack = useTestStack();
const rx = useHttpsReceiver();
/** The demo image's shell prompt. */
const PROMPT = /:\/app[$#] $/m;
let dir: string;
const terminals: Terminal[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-observers-'));
});
afterAll(async () => {
  for (const c of children) c.kill();
  for (const t of terminals) await t.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type Tenant = Awaited<ReturnType<typeof createTenant>>;

/** Another user of the tenant's account (or of none), with a registered key of their own. */
async function userWithKey(t: Tenant, role: 'member' | 'account_admin', name: string, accounts = [t.account]) {
  const suffix = randomBytes(3).toString('hex');
  const u = await stack.api.post('/users', stack.adminToken, { name: `${name} ${suffix}`, email: `${name}-${suffix}@example.com`, role, accounts });
  expect(u.status, JSON.stringify(u.body)).toBe(201);
  const key = await generateKey(dir, `${name}-${suffix}`);
  await registerKey(stack, u.body.token, u.body.id, key.keyFile);
  return { id: u.body.id as number, name: u.body.name as string, email: u.body.email as string, token: u.body.token as string, keyFile: key.keyFile };
}

/** The owner's session, attached by OpenSSH (`ssh -tt`, the token as password) in a tmux terminal, at its prompt. */
async function ownerSession(t: Tenant) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const { id, connect } = r.body as { id: number; connect: { user: string; token: string } };
  const tokenFile = await writeSecretFile(dir, `token-${id}`, connect.token);
  const term = await Terminal.start(['sshpass', '-f', tokenFile, 'ssh', '-tt', ...sshArgs(stack.runtime.portal!.port, passwordOnly), `${connect.user}@127.0.0.1`].map(q).join(' '));
  terminals.push(term);
  await term.waitForText(PROMPT);
  await waitForState(stack, t.token, id, 'active', 10_000);
  return { id, term };
}

/**
 * A tenant whose events go to the receiver, an admin of its account with a key, and the owner's session
 * at its prompt after `echo WORDS` printed `printed` (the typed line and its output differ: the output
 * can only come from the program).
 */
async function watchedSession(drain: string, adminName: string, words: string, printed: RegExp) {
  const t = await createTenant(stack);
  await addHttpsDrain(stack, rx, t.account, drain, `/${drain}`);
  const admin = await userWithKey(t, 'account_admin', adminName);
  const { id, term: owner } = await ownerSession(t);
  await owner.typeLine(`echo ${words}`);
  await owner.waitForText(printed);
  return { t, admin, id, owner };
}

/** An observer's OpenSSH (`ssh -tt watch-<id>@…` with the key) in a tmux terminal of its own. */
async function observerTerminal(id: number, keyFile: string) {
  const term = await Terminal.start(['ssh', '-tt', ...sshArgs(stack.runtime.portal!.port, keyOnly(keyFile)), `watch-${id}@127.0.0.1`].map(q).join(' '));
  terminals.push(term);
  return term;
}

/** An observer's program (ssh -T, essh watch) with pipes: what it printed so far on stdout and stderr, and its exit. */
function observerProcess(program: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(program, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const seen = { child, out: '', err: '', exited: new Promise<number | null>((r) => child.once('exit', r)) };
  child.stdout!.on('data', (c: Buffer) => (seen.out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (seen.err += c.toString()));
  return seen;
}

/** `ssh -T watch-<id>@…` with the key, to its end: what a refused observer is told. */
function watchOnce(id: number, keyFile: string) {
  return runToEnd('ssh', ['-T', ...sshArgs(stack.runtime.portal!.port, keyOnly(keyFile)), `watch-${id}@127.0.0.1`], { timeoutMs: 30_000 });
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('watching a live session', () => {
  it('an account admin (ssh watch-<id>) and an operator (essh watch) see the output, type into nothing, are announced to the owner, audited, and let go when the session ends', async () => {
    const { t, admin, id, owner } = await watchedSession('observed', 'admin', 'before-$((40+2))', /^before-42\s*$/m);

    // The admin joins: told what it watches, shown the screen so far, and the owner is told.
    const watcher = await observerTerminal(id, admin.keyFile);
    await watcher.waitForText(new RegExp(`essh: watching session ${id} read-only \\(its terminal is 100x30\\); what you type goes nowhere\\. Ctrl-C stops watching\\.`));
    await watcher.waitForText(/^before-42\s*$/m);
    await owner.waitForText(new RegExp(`essh: ${escape(admin.name)} <${escape(admin.email)}> \\(an admin of its account\\) is watching this session, read-only, from 127\\.0\\.0\\.1`));

    // Live output reaches the observer.
    await owner.typeLine('echo live-$((6*7))');
    await owner.waitForText(/^live-42\s*$/m);
    await watcher.waitForText(/^live-42\s*$/m);

    // What the observer types goes nowhere: no file, no output, on neither screen.
    await watcher.typeLine('touch /tmp/observer-was-here; echo observer-typed-$((1+1))');
    await owner.typeLine('ls /tmp/observer-was-here; echo check-$((2+3))');
    await owner.waitForText(/^check-5\s*$/m);
    await watcher.waitForText(/^check-5\s*$/m);
    const ownerScreen = await owner.screen();
    expect(ownerScreen).toMatch(/ls: \/tmp\/observer-was-here: No such file or directory/);
    expect(ownerScreen).not.toMatch(/observer-typed/);
    expect(await watcher.screen()).not.toMatch(/observer-typed-2/);

    // Ctrl-C: the admin stops watching, its ssh exits 0, and the owner is told.
    await watcher.keys('C-c');
    expect(await watcher.exitStatus(20_000)).toBe(0);
    expect(await watcher.screen()).toMatch(new RegExp(`essh: stopped watching session ${id}\\.`));
    await owner.waitForText(new RegExp(`essh: ${escape(admin.name)} <${escape(admin.email)}> stopped watching this session \\(after \\d+(\\.\\d+)? s\\)`));

    // An operator watches with the CLI (a watch token from the API; no key of its own).
    const cli = observerProcess(process.execPath, [path.join(projectRoot, 'bin', 'essh.js'), 'watch', String(id)],
      { ESSH_CONFIG: path.join(dir, 'no-config.json'), ESSH_API_URL: stack.url, ESSH_TOKEN: stack.adminToken });
    await waitFor('essh watch to show the screen so far', async () => /^live-42\r?$/m.test(cli.out), 30_000, 100)
      .catch((err: Error) => { throw new Error(`${err.message}; essh said: ${cli.err}`); });
    expect(cli.err).toContain(`essh: watching session ${id} read-only (its terminal is 100x30)`);
    await owner.waitForText(/\(an operator\) is watching this session, read-only, from 127\.0\.0\.1/);
    // What the CLI's stdin carries goes nowhere either.
    cli.child.stdin!.write('touch /tmp/cli-was-here\n');
    await owner.typeLine('ls /tmp/cli-was-here; echo cli-$((3*3))');
    await waitFor('essh watch to show live output', async () => /^cli-9\r?$/m.test(cli.out), 20_000, 100);
    expect(await owner.screen()).toMatch(/ls: \/tmp\/cli-was-here: No such file or directory/);

    // The session ends: the observer is told how and let go (exit 0); the owner's ssh has its status.
    await owner.typeLine('exit 3');
    expect(await owner.exitStatus(20_000)).toBe(3);
    expect(await cli.exited, cli.err).toBe(0);
    expect(cli.err).toContain(`essh: session ${id} has ended (its program exited with status 3).`);
    await waitForState(stack, t.token, id, 'ended', 30_000);

    // Each joining and leaving is a drain event with the session's metadata, who, as whom, from where and when.
    const observed = await waitFor('the four session_observed events', async () => {
      const events = eventsOf(rx).filter((e) => e.operation_id === id && e.event === 'session_observed');
      return events.length >= 4 ? events : undefined;
    }, 30_000, 200);
    const common = { stream: 'lifecycle', app: t.app, account: t.account, operation_user_email: t.user.email, observer_address: '127.0.0.1' };
    const byAdmin = observed.filter((e) => e.observed_by === admin.email);
    expect(byAdmin.map((e) => e.observer_action)).toEqual(['joined', 'left']);
    for (const e of byAdmin) expect(e).toMatchObject({ ...common, observer_role: 'account_admin', observer_credential: 'key', observer_name: admin.name });
    const [adminJoined, adminLeft] = byAdmin as [Record<string, any>, Record<string, any>];
    expect(adminLeft.duration_s).toBeGreaterThan(0);
    expect(adminLeft.joined_at).toBe(adminJoined.joined_at);
    expect(Date.parse(adminLeft.time) - Date.parse(adminJoined.joined_at)).toBeGreaterThanOrEqual(adminLeft.duration_s * 1000 - 1000);
    expect(adminLeft.log).toContain(`stopped watching this session (after ${adminLeft.duration_s} s)`);
    const byOperator = observed.filter((e) => e.observed_by !== admin.email);
    expect(byOperator.map((e) => e.observer_action)).toEqual(['joined', 'left']);
    for (const e of byOperator) expect(e).toMatchObject({ ...common, observer_role: 'operator', observer_credential: 'token', observer_name: 'Test Operator' });
    // Left before the session ended: its session_ended comes after.
    const all = eventsOf(rx).filter((e) => e.operation_id === id);
    expect(all.findIndex((e) => e.event === 'session_ended')).toBeGreaterThan(all.indexOf(byOperator[1]!));

    // The recording's timeline marks them.
    const rec = await stack.api.get(`/sessions/${id}/recording`, t.token);
    expect(rec.status).toBe(200);
    const markers = String(rec.body).split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => Array.isArray(e) && e[1] === 'm').map((e) => e[2]);
    expect(markers).toEqual([
      expect.stringContaining(`${admin.name} <${admin.email}> (an admin of its account) is watching this session`),
      expect.stringContaining(`${admin.name} <${admin.email}> stopped watching this session`),
      expect.stringContaining('(an operator) is watching this session'),
      expect.stringContaining('stopped watching this session'),
    ]);
  }, 180_000);

  it('refuses whoever may not watch, a session that is not live, and keeps watch tokens and attach tokens apart; the owner may watch, with essh watch on a terminal too', async () => {
    const t = await createTenant(stack);
    const other = await createTenant(stack);
    const member = await userWithKey(t, 'member', 'member');
    const stranger = await userWithKey(other, 'member', 'stranger', [other.account]);
    const ownerKey = await generateKey(dir, `owner-${randomBytes(3).toString('hex')}`);
    await registerKey(stack, t.token, t.user.id, ownerKey.keyFile);
    const { id, term: owner } = await ownerSession(t);

    // A member who is not the owner, and a user of another account: the same refusal, which tells nothing.
    for (const who of [member, stranger]) {
      const r = await watchOnce(id, who.keyFile);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`essh: Session ${id} was not found, or you may not see it.`);
      expect(r.stdout.toString()).toBe('');
      expect((await stack.api.post(`/sessions/${id}/watch`, who.token, {})).status).toBe(404);
    }
    // The owner may watch their own session (from another machine, say); a key nobody registered logs in as nobody.
    const self = observerProcess('ssh', ['-T', ...sshArgs(stack.runtime.portal!.port, keyOnly(ownerKey.keyFile)), `watch-${id}@127.0.0.1`]);
    await waitFor('the owner to be watching', async () => self.err.includes(`watching session ${id} read-only`), 20_000, 100);
    await owner.waitForText(/\(its owner\) is watching this session/);
    self.child.kill();
    // essh watch on a terminal: keys are read raw and go nowhere, Ctrl-C stops watching (status 0).
    const cliTerm = await Terminal.start([process.execPath, path.join(projectRoot, 'bin', 'essh.js'), 'watch', String(id)].map(q).join(' '), {
      env: { ESSH_CONFIG: path.join(dir, 'no-config.json'), ESSH_API_URL: stack.url, ESSH_TOKEN: t.token },
    });
    terminals.push(cliTerm);
    await cliTerm.waitForText(new RegExp(`essh: watching session ${id} read-only \\(its terminal is 100x30\\); what you type goes nowhere\\. Ctrl-C stops watching\\.`));
    await cliTerm.typeLine('touch /tmp/tty-cli-was-here');
    await cliTerm.keys('C-c');
    expect(await cliTerm.exitStatus(20_000)).toBe(0);
    await owner.typeLine('ls /tmp/tty-cli-was-here; echo after-$((8*8))');
    await owner.waitForText(/^after-64\s*$/m);
    expect(await owner.screen()).toMatch(/ls: \/tmp\/tty-cli-was-here: No such file or directory/);
    await waitFor('the owner to be told the CLI stopped watching', async () =>
      ((await owner.screen()).match(/stopped watching this session/g) ?? []).length >= 2, 20_000, 100);
    const unknown = await generateKey(dir, `unknown-${randomBytes(3).toString('hex')}`);
    const denied = await watchOnce(id, unknown.keyFile);
    expect(denied.code).toBe(255);
    expect(denied.stderr).toMatch(/Permission denied/);

    // A watch token logs in as watch-<id> only, never as the session's client.
    const w = await stack.api.post(`/sessions/${id}/watch`, t.token, {});
    expect(w.status, JSON.stringify(w.body)).toBe(201);
    expect(w.body.connect).toMatchObject({ user: `watch-${id}`, ssh_command: expect.stringContaining(`watch-${id}@`) });
    const tokenFile = await writeSecretFile(dir, `watch-token-${id}`, w.body.connect.token);
    const asClient = await runToEnd('sshpass', ['-f', tokenFile, 'ssh', '-T', ...sshArgs(stack.runtime.portal!.port, passwordOnly), `session-${id}@127.0.0.1`], { timeoutMs: 30_000 });
    expect(asClient.code).toBe(255);
    expect(asClient.stderr).toMatch(/Permission denied/);

    // Ended: not live, with where to look instead.
    await owner.typeLine('exit 0');
    expect(await owner.exitStatus(20_000)).toBe(0);
    await waitForState(stack, t.token, id, 'ended', 30_000);
    const ended = await watchOnce(id, ownerKey.keyFile);
    expect(ended.code).toBe(1);
    expect(ended.stderr).toContain(`essh: Session ${id} is not live: it has ended (exit); its recording shows what it printed: essh recording ${id} --play.`);
    const api = await stack.api.post(`/sessions/${id}/watch`, t.token, {});
    expect(api.status).toBe(409);
    expect(api.body.message).toContain(`Session ${id} is not live`);
  }, 180_000);

  it('an observer is let go with the notice when the session is terminated', async () => {
    const { t, admin, id, owner } = await watchedSession('terminated', 'watcher', 'up-$((1+2))', /^up-3\s*$/m);
    const watcher = observerProcess('ssh', ['-T', ...sshArgs(stack.runtime.portal!.port, keyOnly(admin.keyFile)), `watch-${id}@127.0.0.1`]);
    await waitFor('the observer to see the screen so far', async () => /^up-3\r?$/m.test(watcher.out), 20_000, 100);
    await owner.waitForText(/\(an admin of its account\) is watching this session/);
    expect((await stack.api.post(`/sessions/${id}/terminate`, t.token, { reason: 'observer test' })).status).toBe(202);
    expect(await watcher.exited, watcher.err).toBe(0);
    expect(watcher.err).toContain(`essh: session ${id} terminated by ${t.user.email}: observer test`);
    await owner.waitForText(new RegExp(`essh: session ${id} terminated by ${escape(t.user.email)}: observer test`));
  }, 120_000);

  it('the console shows an active session live in its player; its viewer is an observer, announced and audited the same way', async () => {
    const CHROMIUM = '/usr/bin/chromium';
    expect(existsSync(CHROMIUM), `${CHROMIUM}: bash scripts/setup.sh --for-tests installs it`).toBe(true);
    const { admin, id, owner } = await watchedSession('console-observed', 'viewer', 'pre-$((4*5))', /^pre-20\s*$/m);

    const profile = await mkdtemp(path.join(os.tmpdir(), 'essh-chromium-'));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const liveUrls: string[] = [];
    browser.on('request', (r) => void (r.url().includes('/live?') && liveUrls.push(r.url())));
    try {
      const page = await browser.newPage();
      await page.goto(`${stack.url}/console`);
      await page.waitForURL(/#\/sign-in$/);
      await page.fill('#token', admin.token);
      await page.click('#sign-in button[type=submit]');
      await page.waitForSelector('#sessions tbody tr');
      await page.goto(`${stack.url}/console#/sessions/${id}`);
      await page.click('#watch-live');
      const said: string[] = [];
      page.on('console', (m) => void said.push(`${m.type()}: ${m.text()}`));
      const screenShows = (text: string) => page.waitForFunction((x) => document.querySelector('#live-player .ap-term-text')?.textContent?.includes(x), text, { timeout: 20_000 })
        .catch(async (err: Error) => {
          const shown = await page.locator('.live-box').textContent().catch(() => '');
          throw new Error(`${err.message}; the player showed ${JSON.stringify(shown)}; the page said ${JSON.stringify(said)}`);
        });
      // The screen so far, then live output.
      await screenShows('pre-20');
      await owner.waitForText(new RegExp(`essh: ${escape(admin.name)} <${escape(admin.email)}> \\(an admin of its account\\) is watching this session, read-only, from 127\\.0\\.0\\.1`));
      await owner.typeLine('echo in-browser-$((5*5))');
      await screenShows('in-browser-25');
      // Leaving the page stops watching: the owner is told.
      await page.goto(`${stack.url}/console#/sessions`);
      await owner.waitForText(new RegExp(`essh: ${escape(admin.name)} <${escape(admin.email)}> stopped watching this session`));
    } finally {
      await browser.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    }
    // The watch token in the live view's URL worked once: it is spent.
    expect(liveUrls).toHaveLength(1);
    const again = await fetch(liveUrls[0]!);
    expect(again.status).toBe(401);
    expect((await again.json()).message).toContain(`This watch token is not valid for session ${id}`);
    await owner.typeLine('exit 0');
    expect(await owner.exitStatus(20_000)).toBe(0);
    const observed = await waitFor('the console viewer\'s session_observed events', async () => {
      const events = eventsOf(rx).filter((e) => e.operation_id === id && e.event === 'session_observed');
      return events.length >= 2 ? events : undefined;
    }, 30_000, 200);
    expect(observed.map((e) => [e.observer_action, e.observed_by, e.observer_role, e.observer_credential, e.observer_address]))
      .toEqual([['joined', admin.email, 'account_admin', 'token', '127.0.0.1'], ['left', admin.email, 'account_admin', 'token', '127.0.0.1']]);
  }, 180_000);
});
