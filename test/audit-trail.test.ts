import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, DEMO_IMAGE, useTestStack, waitFor } from './support/harness.js';
import { useHttpsReceiver } from './support/drains-receivers.js';
import { registerKey } from './support/portal-terminal.js';

/**
 * The audit trail (GET /audit_events and the account's drains) and API token expiry, through the real
 * API, with a real HTTPS receiver as the account's drain and ssh-keygen's keys and fingerprints.
 */

const run = promisify(execFile);
const TTL_S = 3600;
// Values that must never show in an audit event, through the API or a drain.
const ENV_SECRET = 'env-value-never-audited-7f3a';
const APP_SECRET = 'new-app-secret-value-91c2';
const DRAIN_PASSWORD = 'drain-password-5e8b';

const stack = useTestStack({ env: { ESSH_TOKEN_DEFAULT_TTL_S: String(TTL_S), ESSH_DRAIN_BACKOFF_CAP_S: '2' } });
const rx = useHttpsReceiver();
let A: Awaited<ReturnType<typeof createTenant>>;
let B: Awaited<ReturnType<typeof createTenant>>;
let adminA: { id: number; email: string; token: string };
let keyDir: string;
let t0: string;
/** Every token value this file was given: none may be in an event. */
const issuedTokens: string[] = [];
const api = () => stack.api;
const op = () => stack.adminToken;

async function ok<T = any>(p: Promise<{ status: number; body: T }>, status: number): Promise<T> {
  const r = await p;
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  return r.body;
}

async function newKey(name: string): Promise<{ file: string; line: string; fingerprint: string }> {
  const file = path.join(keyDir, name);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@audit`, '-f', file]);
  const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`]);
  return { file, line: (await readFile(`${file}.pub`, 'utf8')).trim(), fingerprint: stdout.split(' ')[1]! };
}

/** The events since the file's start, every page of them (newest first). */
const eventsSince = (token: string, filters = '') => api().listAll(`/audit_events?since=${encodeURIComponent(t0)}${filters}`, token);

beforeAll(async () => {
  keyDir = await mkdtemp(path.join(os.tmpdir(), 'essh-audit-keys-'));
  A = await createTenant(stack, { env: { APP_ENV: 'test', DATABASE_URL: `postgres://app:${ENV_SECRET}@db/app` } });
  B = await createTenant(stack);
  issuedTokens.push(A.token, B.token);
  for (const [t, p] of [[A, '/a'], [B, '/b']] as const) {
    await ok(api().post(`/accounts/${t.account}/log_drains`, op(), { handle: 'audit', drain_type: 'https', url: `${rx.url}${p}`, ca_cert: rx.cert.cert }), 201);
  }
  const u = await ok(api().post('/users', op(), { name: 'Ada Admin', email: `ada-${A.account}@example.com`, role: 'account_admin', accounts: [A.account] }), 201);
  adminA = { id: u.id, email: u.email, token: u.token };
  issuedTokens.push(u.token);
  t0 = new Date().toISOString();
}, 120_000);

afterAll(async () => {
  if (keyDir) await rm(keyDir, { recursive: true, force: true });
});

describe('the audit trail', () => {
  let events: any[];
  let key: { file: string; line: string; fingerprint: string };
  let member: { id: number; email: string };
  let newApp: string;

  beforeAll(async () => {
    // Operators: an account's plan and grants, a stack.
    await ok(api().request('PATCH', `/accounts/${A.account}`, op(), { plan: 'development', stacks: ['local'] }), 200);
    await ok(api().post('/stacks', op(), { name: `audit-${A.account}` }), 201);
    // An account admin: an app's env and a new app, a user with tokens and keys, a drain, a rule.
    await ok(api().request('PATCH', `/apps/${A.app}`, adminA.token, { env: { APP_ENV: 'production', NEW_SECRET: APP_SECRET } }), 200);
    newApp = `audited-${A.account}`;
    await ok(api().post('/apps', adminA.token, { handle: newApp, account: A.account, stack: 'local', image: DEMO_IMAGE, env: { API_KEY: APP_SECRET } }), 201);
    const m = await ok(api().post('/users', adminA.token, { name: 'Mo Member', email: `mo-${A.account}@example.com`, role: 'member', accounts: [A.account] }), 201);
    member = { id: m.id, email: m.email };
    issuedTokens.push(m.token);
    const t = await ok(api().post(`/users/${m.id}/tokens`, adminA.token, { name: 'ci' }), 201);
    issuedTokens.push(t.token);
    await ok(api().delete(`/users/${m.id}/tokens/${t.id}`, adminA.token), 204);
    key = await newKey('mo');
    // Registered as its holder does (essh keys add's steps): the admin holds the key it registers.
    const k = await registerKey(stack, adminA.token, m.id, key.file);
    await ok(api().delete(`/users/${m.id}/ssh_keys/${k.id}`, adminA.token), 204);
    const d = await ok(api().post(`/accounts/${A.account}/log_drains`, adminA.token, {
      handle: 'with-password', drain_type: 'https', url: `https://collector:${DRAIN_PASSWORD}@127.0.0.1:9/ingest`,
    }), 201);
    await ok(api().delete(`/log_drains/${d.id}`, adminA.token), 204);
    const rule = await ok(api().post(`/accounts/${A.account}/redaction_rules`, adminA.token, { name: 'cards', preset: 'card_number' }), 201);
    await ok(api().request('DELETE', `/redaction_rules/${rule.id}`, adminA.token), 204);
    // Another account's change, by an operator, claiming another address (a header anyone can send).
    const spoofed = await fetch(`${stack.url}/apps/${B.app}`, {
      method: 'PATCH', body: JSON.stringify({ env: { ONLY_B: '1' } }),
      headers: { authorization: `Bearer ${op()}`, 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.7' },
    });
    expect(spoofed.status).toBe(200);
    events = await eventsSince(op());
  }, 60_000);

  const one = (action: string, pred: (e: any) => boolean = () => true) => {
    const found = events.filter((e) => e.action === action && pred(e));
    expect(found, `${action} in ${JSON.stringify(events.map((e) => e.action))}`).toHaveLength(1);
    return found[0];
  };

  it('records each kind of change: actor, target, changed fields, source address and time', async () => {
    const now = new Date().toISOString();
    for (const e of events) {
      expect(e.at >= t0 && e.at <= now, `${e.action} at ${e.at}`).toBe(true);
      // The API's peer: the test's own loopback connection.
      expect(e.source_address).toMatch(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
    }
    const opActor = { id: expect.any(Number), role: 'operator' };
    const adminActor = { id: adminA.id, email: adminA.email, name: 'Ada Admin', role: 'account_admin' };
    expect(one('account.updated', (e) => e.target.name === A.account)).toMatchObject({
      actor: opActor, accounts: [A.account], target: { type: 'account' }, fields: ['plan', 'stacks'],
      details: { plan: { from: 'scale', to: 'development' }, stacks: { from: [], to: ['local'] } },
    });
    expect(one('stack.created')).toMatchObject({ actor: opActor, accounts: [], target: { type: 'stack', name: `audit-${A.account}` } });
    expect(one('app.updated', (e) => e.target.name === A.app)).toMatchObject({
      actor: adminActor, accounts: [A.account], target: { type: 'app' }, fields: ['env'],
      details: { env: { added: ['NEW_SECRET'], removed: ['DATABASE_URL'], changed: ['APP_ENV'] } },
    });
    expect(one('app.created', (e) => e.target.name === newApp)).toMatchObject({
      actor: adminActor, fields: ['account', 'env', 'handle', 'image', 'stack'], details: { image: DEMO_IMAGE, env: { added: ['API_KEY'] } },
    });
    expect(one('user.created', (e) => e.target.id === String(member.id))).toMatchObject({
      actor: adminActor, accounts: [A.account], target: { type: 'user', name: member.email }, details: { role: 'member', accounts: [A.account] },
    });
    const tokens = events.filter((e) => e.action === 'api_token.created' && e.details.user_id === member.id);
    expect(tokens.map((e) => e.target.name).sort()).toEqual(['ci', 'first token']);
    const ci = tokens.find((e) => e.target.name === 'ci');
    expect(ci).toMatchObject({ actor: adminActor, accounts: [A.account], fields: ['expires_at', 'name'] });
    expect(one('api_token.revoked')).toMatchObject({ actor: adminActor, target: { type: 'api_token', id: ci.target.id }, fields: ['revoked_at'] });
    expect(one('ssh_key.added')).toMatchObject({ actor: adminActor, target: { type: 'ssh_key', name: key.fingerprint }, details: { user_id: member.id, type: 'ssh-ed25519' } });
    expect(one('ssh_key.removed')).toMatchObject({ target: { name: key.fingerprint } });
    expect(one('log_drain.created', (e) => e.target.name === 'with-password')).toMatchObject({
      actor: adminActor, accounts: [A.account], details: { drain_type: 'https', has_token: false, url: 'https://****:****@127.0.0.1:9/ingest' },
    });
    expect(one('log_drain.deleted', (e) => e.target.name === 'with-password')).toMatchObject({ actor: adminActor });
    expect(one('redaction_rule.created')).toMatchObject({ actor: adminActor, target: { name: 'cards' }, fields: ['name', 'preset'] });
    expect(one('redaction_rule.deleted')).toMatchObject({ target: { name: 'cards' } });
    const spoofed = one('app.updated', (e) => e.target.name === B.app);
    expect(spoofed).toMatchObject({ accounts: [B.account], details: { env: { added: ['ONLY_B'] } } });
    expect(spoofed.source_address).not.toContain('203.0.113.7');
  });

  it('never holds a secret: env values, tokens, drain credentials, public keys', () => {
    const text = JSON.stringify(events);
    for (const secret of [ENV_SECRET, APP_SECRET, DRAIN_PASSWORD, ...issuedTokens, key.line.split(' ')[1]!]) expect(text).not.toContain(secret);
  });

  it('pages newest first and filters by account, actor, target type, action and time', async () => {
    const pages: any[] = [];
    for (let cursor: string | null = null, n = 0; n < 50; n++) {
      const r: any = await ok(api().get(`/audit_events?since=${encodeURIComponent(t0)}&limit=3${cursor ? `&cursor=${cursor}` : ''}`, op()), 200);
      expect(r.items.length).toBeLessThanOrEqual(3);
      pages.push(...r.items);
      if (!(cursor = r.next_cursor)) break;
    }
    expect(pages.map((e) => e.id)).toEqual(events.map((e) => e.id));
    expect([...pages.map((e) => e.id)].sort((a, b) => b - a)).toEqual(pages.map((e) => e.id));

    const ofB = await eventsSince(op(), `&account=${B.account}`);
    expect(ofB.map((e) => e.action)).toEqual(['app.updated']);
    const byAdmin = await eventsSince(op(), `&actor=${adminA.id}`);
    expect(byAdmin.length).toBeGreaterThan(10);
    expect(byAdmin.every((e) => e.actor.id === adminA.id)).toBe(true);
    expect((await eventsSince(op(), `&actor=${encodeURIComponent(adminA.email)}`)).map((e) => e.id)).toEqual(byAdmin.map((e) => e.id));
    expect((await eventsSince(op(), '&target_type=ssh_key')).map((e) => e.action)).toEqual(['ssh_key.removed', 'ssh_key.added']);
    expect((await eventsSince(op(), '&action=api_token.revoked')).length).toBe(1);
    // A time range: from the stack's creation to the key's removal (exclusive).
    const removed = one('ssh_key.removed');
    const range = await api().listAll(`/audit_events?since=${encodeURIComponent(t0)}&until=${encodeURIComponent(removed.at)}&target_type=ssh_key`, op());
    expect(range.map((e) => e.action)).toEqual(removed.at === one('ssh_key.added').at ? [] : ['ssh_key.added']);
    expect((await api().get(`/audit_events?until=${encodeURIComponent(t0)}&action=stack.created`, op())).body.items
      .some((e: any) => e.target.name === `audit-${A.account}`)).toBe(false);

    const backwards = await api().get(`/audit_events?since=${encodeURIComponent(new Date().toISOString())}&until=${encodeURIComponent(t0)}`, op());
    expect(backwards.status).toBe(422);
    expect(backwards.body.message).toMatch(/"since" .* is after "until"/);
    const badAction = await api().get('/audit_events?action=app.exploded', op());
    expect(badAction.status).toBe(400);
    expect(badAction.body.problems[0]).toMatch(/^query\.action/);
  });

  it("shows an account admin its accounts' events only; a member gets 403", async () => {
    const mine = await eventsSince(adminA.token);
    expect(mine.length).toBeGreaterThan(10);
    for (const e of mine) expect(e.accounts).toEqual([A.account]);
    expect(mine.some((e) => e.action === 'stack.created')).toBe(false);
    expect(mine.some((e) => e.target.name === B.app)).toBe(false);
    // The account's own changes by an operator too.
    expect(mine.some((e) => e.action === 'account.updated' && e.actor.role === 'operator')).toBe(true);
    expect((await api().get(`/audit_events?account=${B.account}`, adminA.token)).status).toBe(404);
    const member = await api().get('/audit_events', A.token);
    expect(member.status).toBe(403);
    expect(member.body.message).toMatch(/operator, or an account admin/);
    expect((await api().get(`/audit_events?account=${A.account}`, A.token)).status).toBe(403);
  });

  it("reaches the account's HTTPS drain, and no other account's; operator-level events go to no drain", async () => {
    const audited = (p: string) => rx.requests.filter((r) => r.path === p).flatMap((r) => JSON.parse(r.body) as any[]).filter((e) => e.event === 'audit');
    const ofA = events.filter((e) => e.accounts.includes(A.account)).map((e) => e.id);
    await waitFor("every audit event of account A at A's drain", async () => {
      const got = new Set(audited('/a').map((e) => e.audit_id));
      return ofA.every((id) => got.has(id));
    }, 30_000, 200);
    const shipped = audited('/a').find((e) => e.action === 'app.updated' && e.target_name === A.app)!;
    expect(shipped).toMatchObject({
      '@timestamp': expect.any(String), stream: 'audit', source: 'audit', account: A.account, actor_email: adminA.email, actor_role: 'account_admin',
      target_type: 'app', fields: ['env'], details: { env: { added: ['NEW_SECRET'], removed: ['DATABASE_URL'], changed: ['APP_ENV'] } },
      source_address: expect.stringMatching(/127\.0\.0\.1|::1/),
    });
    expect(shipped.log).toMatch(new RegExp(`^essh audit: Ada Admin <${adminA.email}> \\(account_admin\\) updated app ${A.app} \\(env\\) from `));
    for (const r of rx.requests) expect(r.headers['idempotency-key']).toMatch(/^essh-drain-\d+-[0-9a-f]{32}$/);

    await waitFor("B's event at B's drain", async () => audited('/b').some((e) => e.target_name === B.app), 30_000, 200);
    const atB = audited('/b');
    expect(atB.filter((e) => ofA.includes(e.audit_id))).toEqual([]);
    const everywhere = rx.requests.map((r) => r.body).join('\n');
    expect(everywhere).not.toContain(`audit-${A.account}`); // the stack: an operator's, no tenant's
    for (const secret of [ENV_SECRET, APP_SECRET, DRAIN_PASSWORD, ...issuedTokens]) expect(everywhere).not.toContain(secret);

    const drain = (await api().listAll(`/accounts/${A.account}/log_drains`, adminA.token)).find((d) => d.handle === 'audit');
    expect(drain.delivery.delivered_events).toBeGreaterThanOrEqual(ofA.length);
  });
});

describe('API token expiry', () => {
  it('gives new tokens the default life, and refuses an expired token with a 401 that says what to do', async () => {
    const before = Date.now();
    const made = await ok(api().post(`/users/${adminA.id}/tokens`, adminA.token, { name: 'default life' }), 201);
    const life = Date.parse(made.expires_at) - before;
    expect(life).toBeGreaterThan((TTL_S - 60) * 1000);
    expect(life).toBeLessThanOrEqual((TTL_S + 60) * 1000);
    const u = await ok(api().post('/users', adminA.token, { name: 'New', email: `new-${A.account}@example.com`, role: 'member', accounts: [A.account] }), 201);
    expect(Date.parse(u.token_expires_at) - before).toBeGreaterThan((TTL_S - 60) * 1000);

    const past = await api().post(`/users/${adminA.id}/tokens`, adminA.token, { expires_at: new Date(Date.now() - 1000).toISOString() });
    expect(past.status).toBe(422);
    expect(past.body.message).toMatch(/not in the future/);

    const expiresAt = new Date(Date.now() + 2000).toISOString();
    const short = await ok(api().post(`/users/${adminA.id}/tokens`, adminA.token, { name: 'short', expires_at: expiresAt }), 201);
    expect(short.expires_at).toBe(expiresAt);
    expect((await api().get('/me', short.token)).status).toBe(200);
    const refused = await waitFor('the short token to expire', async () => {
      const r = await api().get('/me', short.token);
      return r.status === 401 ? r : undefined;
    }, 15_000, 250);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(expiresAt));
    expect(refused.body).toMatchObject({ error: 'unauthorized' });
    expect(refused.body.message).toBe(`This API token expired at ${expiresAt}; ask an admin for a new one, or issue yourself one with another ` +
      `token that is still valid (POST /users/${adminA.id}/tokens), then \`essh login\` with it.`);
    for (const [method, p] of [['GET', '/sessions'], ['POST', `/apps/${A.app}/sessions`], ['GET', '/audit_events']] as const) {
      expect((await api().request(method, p, short.token, method === 'POST' ? {} : undefined)).status, `${method} ${p}`).toBe(401);
    }
    const listed = (await api().listAll(`/users/${adminA.id}/tokens`, adminA.token)).find((t) => t.id === short.id);
    expect(listed.expires_at).toBe(expiresAt);
    // The issue is audited with its expiry, never the value.
    const audited = (await api().listAll(`/audit_events?action=api_token.created&actor=${adminA.id}`, op())).find((e) => e.target.id === String(short.id));
    expect(audited.details.expires_at).toBe(expiresAt);
    expect(JSON.stringify(audited)).not.toContain(short.token);
  });
});
