import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, runInSession, useTestStack, waitFor, waitForState } from './support/harness.js';

/**
 * The web console (console/) in a real browser: Debian's chromium, driven by playwright-core (which
 * never downloads a browser of its own). Signing in, the sessions list and its filters, one session's
 * lifecycle, Operation record and recording played by asciinema-player, the same permissions as
 * the API (another account's session is a not-found, because the API answered 404), the list kept up
 * to date while the tab is visible, and ending a live session from the console with a reason.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const stack = useTestStack();
let A: Awaited<ReturnType<typeof createTenant>>;
let B: Awaited<ReturnType<typeof createTenant>>;
let mine: { id: number; text: string };
let theirs: number;
let profile: string;
let browser: BrowserContext;
/** Every request the pages made, and what the browser said in its console (CSP violations show there). */
const requests: string[] = [];
const browserConsole: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`test/console.test.ts needs ${CHROMIUM}: \`bash scripts/setup.sh --for-tests\` installs Debian's chromium (npm test runs it)`);
  }
  A = await createTenant(stack, { plan: 'scale' });
  B = await createTenant(stack, { plan: 'scale' });
  const text = `console-check-${randomBytes(4).toString('hex')}`;
  const run = await runInSession(stack, A, { command: ['sh', '-c', `echo ${text}; echo second line; exit 3`] });
  expect(run.stdout.toString()).toContain(text);
  mine = { id: run.id, text };
  theirs = (await runInSession(stack, B, { command: ['sh', '-c', 'echo not-yours'] })).id;

  // A fresh profile each run (the --user-data-dir), thrown away afterwards.
  profile = await mkdtemp(path.join(os.tmpdir(), 'essh-chromium-'));
  browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: ARGS, headless: true });
  browser.on('request', (r) => void requests.push(r.url()));
  browser.on('console', (m) => void browserConsole.push(`${m.type()}: ${m.text()}`));
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  if (profile) await rm(profile, { recursive: true, force: true });
}, 90_000);

async function signIn(page: Page, token: string) {
  await page.goto(`${stack.url}/console`);
  await page.waitForURL(/#\/sign-in$/);
  await page.fill('#token', token);
  await page.click('#sign-in button[type=submit]');
  // Gave up once in a full run (a second tab's sign-in, 30 s): where the page was, and what it said.
  await page.waitForSelector('#sessions tbody tr').catch(async (err) => {
    const text = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').slice(0, 500);
    throw new Error(`${(err as Error).message}\nthe page: ${page.url()}\nit showed: ${text}`);
  });
}

describe('the web console', () => {
  it('is served from the API with a Content-Security-Policy that allows this origin only', async () => {
    const res = await fetch(`${stack.url}/console`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'self' 'wasm-unsafe-eval'(;|$)/);
    expect(csp).toMatch(/connect-src 'self'(;|$)/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/unsafe-inline|https?:|\*/);
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script>|<style>|style=/);
    for (const asset of ['console.js', 'console.css', 'licenses.txt']) {
      const a = await fetch(`${stack.url}/console/assets/${asset}`);
      expect(a.status, asset).toBe(200);
      expect(a.headers.get('content-security-policy')).toBe(csp);
    }
    expect(await (await fetch(`${stack.url}/console/assets/licenses.txt`)).text()).toMatch(/asciinema-player[\s\S]*Apache License/);
    expect((await fetch(`${stack.url}/console/assets/nope.js`)).status).toBe(404);
    expect((await fetch(`${stack.url}/console`, { method: 'POST' })).status).toBe(405);
  });

  it('signs in with an API token kept in sessionStorage only, lists the sessions, and plays one session\'s recording', async () => {
    const page = await browser.newPage();
    await signIn(page, A.token);
    expect(await page.textContent('#who')).toContain(A.user.email);
    // The token is in this tab's sessionStorage, and nowhere else.
    expect(await page.evaluate(() => sessionStorage.getItem('essh.token'))).toBe(A.token);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    expect(await browser.cookies()).toEqual([]);
    expect(await page.evaluate(() => document.cookie)).toBe('');

    const row = page.locator(`#sessions tr[data-session="${mine.id}"]`);
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.textContent()).toMatch(/ended.*exit.*3/);
    await row.locator('a').click();
    await page.waitForURL(new RegExp(`#/sessions/${mine.id}$`));

    // The lifecycle: created, connected, ended with its reason and exit code.
    const lifecycle = await page.locator('#lifecycle').textContent();
    expect(lifecycle).toMatch(/Created/);
    expect(lifecycle).toMatch(/Client connected/);
    expect(lifecycle).toMatch(/Ended.*reason: exit.*exit code 3/);
    // The Operation record.
    const operation = await page.locator('#operation').textContent();
    expect(operation).toMatch(/Status\s*succeeded/);
    expect(operation).toContain(A.user.email);
    // The player shows what the session printed.
    await page.waitForFunction((text) => document.querySelector('.ap-term-text')?.textContent?.includes(text), mine.text, { timeout: 15_000 });
    expect(await page.locator('.ap-term-text').textContent()).toContain('second line');
    // ESSH_CONSOLE_SCREENSHOT=file.png: what the page looked like, to see for oneself.
    if (process.env.ESSH_CONSOLE_SCREENSHOT) await page.screenshot({ path: process.env.ESSH_CONSOLE_SCREENSHOT, fullPage: true });
    await page.close();
  });

  it('shows another account\'s session as not found, because the API answered 404', async () => {
    const page = await browser.newPage();
    await signIn(page, A.token);
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === `/sessions/${theirs}`);
    await page.goto(`${stack.url}/console#/sessions/${theirs}`);
    expect((await answer).status()).toBe(404);
    const alert = page.locator('.alert.not-found');
    await alert.waitFor();
    expect(await alert.textContent()).toMatch(new RegExp(`Session ${theirs} was not found, or you may not see it`));
    expect(await page.locator('.ap-term-text').count()).toBe(0);
    // Nor is it in the list.
    await page.goto(`${stack.url}/console#/sessions`);
    await page.waitForSelector(`#sessions tr[data-session="${mine.id}"]`);
    expect(await page.locator(`#sessions tr[data-session="${theirs}"]`).count()).toBe(0);
    await page.close();
  });

  /** Waits for the list to hold exactly the one session's row (CI once read it between two renders). */
  const onlyRow = (page: Page, id: number) => waitFor(`the list to hold only session ${id}`, async () =>
    (await page.locator('#sessions tbody tr').count()) === 1 && (await page.locator(`#sessions tr[data-session="${id}"]`).count()) === 1, 15_000, 50);

  it('filters by app, state and user (an operator sees every account)', async () => {
    const page = await browser.newPage();
    await signIn(page, stack.adminToken);
    await page.waitForSelector(`#sessions tr[data-session="${theirs}"]`);
    await page.selectOption('#filter-app', B.app);
    await page.click('#filters button[type=submit]');
    await page.waitForURL(new RegExp(`#/sessions\\?app=${B.app}$`));
    // The unfiltered list is still on the page until the filtered one replaces it.
    await onlyRow(page, theirs);

    await page.goto(`${stack.url}/console#/sessions?state=active`);
    await page.waitForSelector('#list-status .alert');
    expect(await page.locator('#sessions tbody tr').count()).toBe(0);

    await page.selectOption('#filter-state', 'ended');
    await page.selectOption('#filter-user', String(A.user.id));
    await page.click('#filters button[type=submit]');
    await page.waitForURL(/state=ended&user=/);
    await onlyRow(page, mine.id);
    await page.close();
  });

  it('shows what users wrote as text, never as HTML, with its control characters escaped', async () => {
    const HOSTILE = '<img src=x onerror="window.__pwned=1"><b id="injected">bold</b>\u001b]0;pwned\u0007\u001b[2J\u009b31m';
    const SHOWN = '<img src=x onerror="window.__pwned=1"><b id="injected">bold</b>\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m';
    const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
    const s = await stack.api.post(`/apps/${A.app}/sessions`, A.token, {});
    await waitForState(stack, A.token, s.body.id, 'waiting_for_client');
    expect((await stack.api.post(`/sessions/${s.body.id}/terminate`, stack.adminToken, { reason: HOSTILE })).status).toBe(202);
    await waitForState(stack, A.token, s.body.id, 'ended');
    const mallory = await stack.api.post('/users', stack.adminToken, {
      name: `Mallory ${HOSTILE}`, email: `mallory-${s.body.id}@example.com`, role: 'account_admin', accounts: [A.account],
    });
    expect(mallory.status).toBe(201);

    const page = await browser.newPage();
    await signIn(page, mallory.body.token);
    expect(await page.textContent('#who')).toContain(`Mallory ${SHOWN}`);
    const row = page.locator(`#sessions tr[data-session="${s.body.id}"]`);
    await expect.poll(() => row.count()).toBe(1);
    await row.locator('a').click();
    await page.waitForSelector('#lifecycle');
    expect(await page.locator('#lifecycle').textContent()).toContain(`“${SHOWN}”`);
    const main = await page.locator('#main').textContent();
    expect(main).toContain(SHOWN);
    expect(main).not.toMatch(RAW_CONTROL);
    // Nothing of it became markup, and nothing of it ran.
    expect(await page.locator('#injected, img[src="x"]').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.close();
  });

  it('signs out: the token is gone and the API is not called again', async () => {
    const page = await browser.newPage();
    await signIn(page, A.token);
    await page.click('#sign-out');
    await page.waitForURL(/#\/sign-in$/);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await page.goto(`${stack.url}/console#/sessions/${mine.id}`);
    await page.waitForURL(/#\/sign-in$/);
    await page.close();
  });

  /** The page's requests for the sessions list (the polling): when each was sent, and its answer's status. */
  const listCalls = (page: Page) => {
    const calls: { sentAt: number; status?: number }[] = [];
    const sent = new Map<object, { sentAt: number; status?: number }>();
    page.on('request', (r) => {
      if (new URL(r.url()).pathname !== '/sessions') return;
      const call = { sentAt: Date.now() };
      calls.push(call);
      sent.set(r, call);
    });
    page.on('response', (r) => {
      const call = sent.get(r.request());
      if (call) call.status = r.status();
    });
    return calls;
  };

  it('keeps the list up to date without a reload; the owner ends a live session from the console with a reason', async () => {
    const list = await browser.newPage();
    const polls = listCalls(list);
    await signIn(list, A.token);
    // Gone if the page were reloaded.
    await list.evaluate(() => void ((window as unknown as { sameDocument: boolean }).sameDocument = true));
    // An unchanged list is a 304 with no body (the API's ETag), not the whole page again.
    await waitFor('a poll of the unchanged list answered 304', async () => polls.some((c) => c.status === 304), 15_000, 100);

    // A session created through the API while the page is open appears, and its state changes show.
    const created = await stack.api.post(`/apps/${A.app}/sessions`, A.token, {});
    expect(created.status).toBe(201);
    const id: number = created.body.id;
    await list.waitForSelector(`#sessions tr[data-session="${id}"][data-state="waiting_for_client"]`, { timeout: 20_000 });
    // Newest first: above the older session.
    expect(await list.locator('#sessions tbody tr').first().getAttribute('data-session')).toBe(String(id));

    // The owner opens it in another tab and ends it with a reason.
    const one = await browser.newPage();
    await signIn(one, A.token);
    await one.goto(`${stack.url}/console#/sessions/${id}`);
    await one.click('#terminate-open');
    const reason = one.locator('#terminate-reason');
    expect(await reason.getAttribute('maxlength')).toBe('500');
    // The reason is required: an empty form sends nothing.
    const terminateCalls: string[] = [];
    one.on('request', (r) => void (r.method() === 'POST' && terminateCalls.push(r.url())));
    await one.click('#terminate button[type=submit]');
    expect(await reason.evaluate((el: HTMLTextAreaElement) => el.validity.valueMissing)).toBe(true);
    const REASON = `maintenance window ${randomBytes(3).toString('hex')}`;
    await reason.fill(REASON);
    const answer = one.waitForResponse((r) => new URL(r.url()).pathname === `/sessions/${id}/terminate`);
    await one.click('#terminate button[type=submit]');
    expect((await answer).status()).toBe(202);
    expect(terminateCalls).toEqual([`${stack.url}/sessions/${id}/terminate`]);
    // The session's page follows it to its end, and the button goes.
    await one.waitForFunction(() => document.querySelector('#session-state')?.textContent === 'ended', undefined, { timeout: 30_000 });
    expect(await one.locator('#terminate-open').count()).toBe(0);
    expect(await one.locator('#lifecycle').textContent()).toMatch(new RegExp(`reason: terminated.*“${REASON}”.*ended by ${A.user.email}`));

    // The API recorded it so.
    const ended = await stack.api.get(`/sessions/${id}`, A.token);
    expect(ended.body).toMatchObject({ state: 'ended', end_reason: 'terminated', end_message: REASON, ended_by: A.user.email });
    // And the list in the first tab shows it ended, without a reload.
    const row = list.locator(`#sessions tr[data-session="${id}"][data-state="ended"]`);
    await row.waitFor({ timeout: 20_000 });
    expect(await row.textContent()).toContain('terminated');
    expect(await list.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    await one.close();
    await list.close();
  });

  it('makes no request while the tab is hidden, and checks at once when it is shown again', async () => {
    const list = await browser.newPage();
    const polls = listCalls(list);
    await signIn(list, A.token);
    await waitFor('the list to be polled', async () => polls.length >= 2, 15_000, 100);
    // Headless Chromium reports every tab visible (minimizing its window changes nothing), so the
    // page is told it is hidden the way a browser tells it: visibilityState and its event.
    const setVisibility = (state: 'hidden' | 'visible') => list.evaluate((s) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
      document.dispatchEvent(new Event('visibilitychange'));
    }, state);
    await setVisibility('hidden');
    // A poll already on its way may still answer.
    await sleep(500);
    const before = polls.length;
    await sleep(3 * 2_000);
    expect(polls.length).toBe(before);
    const shownAt = Date.now();
    await setVisibility('visible');
    await waitFor('a poll after the tab is shown', async () => polls.length > before, 5_000, 50);
    // At once, not at the next tick of the 2 s timer (the request is sent by the page itself: no API delay in it).
    expect(polls[before]!.sentAt - shownAt).toBeLessThan(1_000);
    await list.close();
  });

  it('shows no terminate button to a user who may not end the session, and the API refuses them too', async () => {
    // A member of the same account who is not the session's owner: the API hides the session from
    // them (404), so the console shows it as not found, with no button.
    const colleague = await stack.api.post('/users', stack.adminToken, {
      name: 'Colleague', email: `colleague-${randomBytes(3).toString('hex')}@example.com`, role: 'member', accounts: [A.account],
    });
    expect(colleague.status).toBe(201);
    const live = await stack.api.post(`/apps/${A.app}/sessions`, A.token, {});
    expect(live.status).toBe(201);
    await waitForState(stack, A.token, live.body.id, 'waiting_for_client');

    const page = await browser.newPage();
    await page.goto(`${stack.url}/console`);
    await page.waitForURL(/#\/sign-in$/);
    await page.fill('#token', colleague.body.token);
    await page.click('#sign-in button[type=submit]');
    await page.waitForSelector('#list-status .alert');
    expect(await page.locator(`#sessions tr[data-session="${live.body.id}"]`).count()).toBe(0);
    await page.goto(`${stack.url}/console#/sessions/${live.body.id}`);
    await page.locator('.alert.not-found').waitFor();
    expect(await page.locator('#terminate-open, #terminate').count()).toBe(0);
    expect((await stack.api.post(`/sessions/${live.body.id}/terminate`, colleague.body.token, { reason: 'not mine' })).status).toBe(404);

    // The owner's own form shows the API's sentence when the API refuses (here a reason over its
    // bound, sent past the form's maxlength), and the session stays live.
    await page.close();
    const owner = await browser.newPage();
    await signIn(owner, A.token);
    await owner.goto(`${stack.url}/console#/sessions/${live.body.id}`);
    await owner.click('#terminate-open');
    await owner.locator('#terminate-reason').evaluate((el) => el.removeAttribute('maxlength'));
    await owner.fill('#terminate-reason', 'x'.repeat(501));
    await owner.click('#terminate button[type=submit]');
    const problem = owner.locator('#terminate-problem .alert');
    await problem.waitFor();
    expect(await problem.textContent()).toMatch(/reason.*500/i);
    expect((await stack.api.get(`/sessions/${live.body.id}`, A.token)).body.state).toBe('waiting_for_client');
    await owner.close();
  });

  it('a list still loading when a session is opened does not replace the session page after it', async () => {
    const created = await stack.api.post(`/apps/${A.app}/sessions`, A.token, {});
    expect(created.status).toBe(201);
    const id: number = created.body.id;
    const page = await browser.newPage();
    await signIn(page, A.token);
    // The list's first request (the apps for its filter) held back, as on a slow network or API.
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    await page.route((url) => url.pathname === '/apps', async (r) => {
      await held;
      await r.continue();
    });
    const listAsked = page.waitForRequest((r) => new URL(r.url()).pathname === '/apps');
    const listAnswered = page.waitForResponse((r) => new URL(r.url()).pathname === '/apps');
    await page.goto(`${stack.url}/console#/sessions?state=waiting_for_client`);
    // The list must have started loading: a second hash change before the first one's event was
    // handled leaves the router reading the second (seen once in a full run: no list, no /apps).
    await listAsked;
    await page.goto(`${stack.url}/console#/sessions/${id}`);
    await page.waitForSelector('#terminate-open');
    release();
    await listAnswered;
    // The list's answer came after the user moved on: the session page stays.
    await page.waitForTimeout(500);
    expect(await page.locator('#terminate-open').count()).toBe(1);
    expect(await page.locator('#sessions').count()).toBe(0);
    await page.close();
    expect((await stack.api.post(`/sessions/${id}/terminate`, A.token, { reason: 'test over' })).status).toBe(202);
  });

  it('loaded nothing from another origin and broke no Content-Security-Policy rule', () => {
    expect(requests.length).toBeGreaterThan(10);
    const elsewhere = requests.filter((u) => !u.startsWith(`${stack.url}/`) && !u.startsWith('blob:') && !u.startsWith('data:'));
    expect(elsewhere).toEqual([]);
    expect(browserConsole.filter((m) => /Content Security Policy|Refused to/i.test(m))).toEqual([]);
  });
});
