import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { imageRepository } from '../domain/grants.js';
import { signKeyChallenge } from '../cli/keys.js';
import { createTenant, DEMO_IMAGE, useTestStack, waitFor, type ApiResponse } from './support/harness.js';
import { generateKey, registerKey } from './support/portal-terminal.js';

/**
 * The permission matrix of docs/permissions.md ("Who may do what"), cell by cell, through the real API.
 * The expectations are read from that table, so the documentation and the code cannot drift apart.
 */

const ACTORS = ['member', 'account_admin', 'operator'] as const;
type Actor = (typeof ACTORS)[number];
interface Who { token: string; id: number; email: string }

const section = readFileSync(path.join(projectRoot, 'docs', 'permissions.md'), 'utf8');
const matrix = section
  .split('\n')
  .filter((l) => l.startsWith('| `'))
  .map((l) => {
    const [action, ...cells] = l.split('|').slice(1, -1).map((c) => c.trim());
    return { action: action!.replaceAll('`', ''), expect: Object.fromEntries(ACTORS.map((a, i) => [a, cells[i]!])) as Record<Actor, string> };
  });

const stack = useTestStack();
let A: Awaited<ReturnType<typeof createTenant>>;
let B: Awaited<ReturnType<typeof createTenant>>;
const actors = {} as Record<Actor, Who>;
let fellow: Who;
let memberB: Who;
let inBoth: Who;
let operatorUser: Who;
const ownSession = {} as Record<Actor, number>;
let fellowSession: number;
let otherSession: number;
/** Log drains are another part's routes; until they are registered their cells must answer "no route". */
let drainsBuilt = false;
let keyDir: string;

const uniq = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;
const api = () => stack.api;
const admin = () => stack.adminToken;

async function createUser(role: string, accounts: string[]): Promise<Who> {
  const r = await api().post('/users', admin(), { name: uniq(role), email: `${uniq(role)}@example.com`, role, accounts });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { token: r.body.token, id: r.body.id, email: r.body.email };
}

async function startSession(token: string, app: string): Promise<number> {
  const r = await api().post(`/apps/${app}/sessions`, token, { command: ['sleep', '600'] });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id;
}

/** A new key from ssh-keygen (fingerprints are unique across users). */
const newKey = () => generateKey(keyDir, uniq('key'));
/**
 * The body that registers `key` for `userId` with a valid proof: the operator's challenge for that
 * user and key, signed with the key. What a cell then tests is only who may send it.
 */
async function provenKey(userId: number, key?: { keyFile: string; publicKey: string }) {
  const k = key ?? (await newKey());
  const issued = await api().post(`/users/${userId}/ssh_key_challenges`, admin(), { public_key: k.publicKey });
  expect(issued.status, JSON.stringify(issued.body)).toBe(200);
  return { public_key: k.publicKey, challenge: issued.body.challenge, signature: await signKeyChallenge(k.keyFile, issued.body.challenge) };
}

async function tokenOf(userId: number): Promise<{ id: number; token: string }> {
  const r = await api().post(`/users/${userId}/tokens`, admin(), { name: 'target' });
  expect(r.status).toBe(201);
  return r.body;
}
async function keyOf(userId: number): Promise<number> {
  return (await registerKey(stack, admin(), userId, (await newKey()).keyFile)).id;
}

type Cell = (who: Who, actor: Actor) => Promise<ApiResponse>;
/** A list cell: the list's items (every page of it) are checked against "own", "account" or "all". */
type ListCheck = (body: any[], kind: string, who: Who, actor: Actor) => void;

const cells: Record<string, Cell> = {
  'POST /accounts': (w) => api().post('/accounts', w.token, { handle: uniq('acct'), plan: 'development' }),
  'GET /accounts/{own account}': (w) => api().get(`/accounts/${A.account}`, w.token),
  'GET /accounts/{other account}': (w) => api().get(`/accounts/${B.account}`, w.token),
  'POST /stacks': (w) => api().post('/stacks', w.token, { name: uniq('stack') }),
  'GET /stacks': (w) => api().get('/stacks', w.token),
  'GET /hosts': (w) => api().get('/hosts', w.token),
  // The stack's own host: the uncordon row comes right after, before any other row creates a session.
  'POST /hosts/{host}/cordon': (w) => api().post(`/hosts/${stack.config.hostId}/cordon`, w.token, {}),
  'POST /hosts/{host}/uncordon': (w) => api().post(`/hosts/${stack.config.hostId}/uncordon`, w.token, {}),
  'POST /apps on own account': (w) => api().post('/apps', w.token, { handle: uniq('app'), account: A.account, stack: 'local', image: DEMO_IMAGE }),
  'POST /apps on other account': (w) => api().post('/apps', w.token, { handle: uniq('app'), account: B.account, stack: 'local', image: DEMO_IMAGE }),
  'GET /apps/{other app}': (w) => api().get(`/apps/${B.app}`, w.token),
  'PATCH /accounts/{own account}': (w) => api().request('PATCH', `/accounts/${A.account}`, w.token, { image_prefixes: [imageRepository(DEMO_IMAGE)] }),
  'PATCH /apps/{own app} env': (w) => api().request('PATCH', `/apps/${A.app}`, w.token, { env: { APP_ENV: 'test' } }),
  'PATCH /apps/{own app} stack, network or warm_pool': (w) => api().request('PATCH', `/apps/${A.app}`, w.token, { warm_pool: 0 }),
  'PATCH /apps/{other app}': (w) => api().request('PATCH', `/apps/${B.app}`, w.token, { env: { APP_ENV: 'test' } }),
  'POST /users member of own account': (w) =>
    api().post('/users', w.token, { name: 'New', email: `${uniq('new')}@example.com`, role: 'member', accounts: [A.account] }),
  'POST /users operator': (w) => api().post('/users', w.token, { name: 'Op', email: `${uniq('op')}@example.com`, role: 'operator', accounts: [] }),
  'POST /users member of other account': (w) =>
    api().post('/users', w.token, { name: 'New', email: `${uniq('new')}@example.com`, role: 'member', accounts: [B.account] }),
  'GET /me': async (w) => {
    const r = await api().get('/me', w.token);
    expect(r.body.id).toBe(w.id);
    return r;
  },
  'GET /users/{self}': (w) => api().get(`/users/${w.id}`, w.token),
  'GET /users/{fellow member}': (w) => api().get(`/users/${fellow.id}`, w.token),
  'GET /users/{user of other account}': (w) => api().get(`/users/${memberB.id}`, w.token),
  'GET /users/{user of own and other account}': (w) => api().get(`/users/${inBoth.id}`, w.token),
  'GET /users/{operator}': (w) => api().get(`/users/${operatorUser.id}`, w.token),
  'POST /users/{self}/tokens': (w) => api().post(`/users/${w.id}/tokens`, w.token, { name: 'mine' }),
  'POST /users/{fellow member}/tokens': (w) => api().post(`/users/${fellow.id}/tokens`, w.token, { name: 'theirs' }),
  'POST /users/{user of other account}/tokens': (w) => api().post(`/users/${memberB.id}/tokens`, w.token, {}),
  'GET /users/{self}/tokens (no values)': async (w) => {
    const r = await api().get(`/users/${w.id}/tokens`, w.token);
    expect(r.body.items.length).toBeGreaterThan(0);
    expect(JSON.stringify(r.body)).not.toMatch(/essh_|token_hash|"token"/);
    return r;
  },
  'GET /users/{fellow member}/tokens': (w) => api().get(`/users/${fellow.id}/tokens`, w.token),
  'DELETE /users/{self}/tokens/{id}': async (w) => {
    // A second token of the caller's own, so that the caller's main token stays valid.
    const t = (await api().post(`/users/${w.id}/tokens`, w.token, { name: 'spare' })).body;
    const r = await api().delete(`/users/${w.id}/tokens/${t.id}`, w.token);
    if (r.status === 204) expect((await api().get('/me', t.token)).status).toBe(401);
    return r;
  },
  'DELETE /users/{fellow member}/tokens/{id}': async (w) => {
    const t = await tokenOf(fellow.id);
    const r = await api().delete(`/users/${fellow.id}/tokens/${t.id}`, w.token);
    expect((await api().get('/me', t.token)).status).toBe(r.status === 204 ? 401 : 200);
    return r;
  },
  'DELETE /users/{user of other account}/tokens/{id}': async (w) => {
    const t = await tokenOf(memberB.id);
    const r = await api().delete(`/users/${memberB.id}/tokens/${t.id}`, w.token);
    expect((await api().get('/me', t.token)).status).toBe(r.status === 204 ? 401 : 200);
    return r;
  },
  'POST /users/{self}/ssh_key_challenges': async (w) => api().post(`/users/${w.id}/ssh_key_challenges`, w.token, { public_key: (await newKey()).publicKey }),
  'POST /users/{fellow member}/ssh_key_challenges': async (w) =>
    api().post(`/users/${fellow.id}/ssh_key_challenges`, w.token, { public_key: (await newKey()).publicKey }),
  'POST /users/{user of other account}/ssh_key_challenges': async (w) =>
    api().post(`/users/${memberB.id}/ssh_key_challenges`, w.token, { public_key: (await newKey()).publicKey }),
  'POST /users/{self}/ssh_keys': async (w) => api().post(`/users/${w.id}/ssh_keys`, w.token, await provenKey(w.id)),
  'POST /users/{fellow member}/ssh_keys': async (w) => api().post(`/users/${fellow.id}/ssh_keys`, w.token, await provenKey(fellow.id)),
  'POST /users/{user of other account}/ssh_keys': async (w) => api().post(`/users/${memberB.id}/ssh_keys`, w.token, await provenKey(memberB.id)),
  'GET /users/{self}/ssh_keys': (w) => api().get(`/users/${w.id}/ssh_keys`, w.token),
  'DELETE /users/{self}/ssh_keys/{id}': async (w) => api().delete(`/users/${w.id}/ssh_keys/${await keyOf(w.id)}`, w.token),
  'DELETE /users/{fellow member}/ssh_keys/{id}': async (w) => {
    const key = await keyOf(fellow.id);
    const r = await api().delete(`/users/${fellow.id}/ssh_keys/${key}`, w.token);
    const left = await api().listAll<{ id: number }>(`/users/${fellow.id}/ssh_keys`, admin());
    expect(left.some((k) => k.id === key)).toBe(r.status !== 204);
    return r;
  },
  'POST /apps/{own app}/sessions': (w) => api().post(`/apps/${A.app}/sessions`, w.token, { command: ['sleep', '600'] }),
  'POST /apps/{other app}/sessions': (w) => api().post(`/apps/${B.app}/sessions`, w.token, { command: ['sleep', '600'] }),
  'GET /sessions/{own session}': (_w, a) => api().get(`/sessions/${ownSession[a]}`, actors[a].token),
  "GET /sessions/{fellow member's session}": (w) => api().get(`/sessions/${fellowSession}`, w.token),
  'GET /sessions/{session of other account}': (w) => api().get(`/sessions/${otherSession}`, w.token),
  'POST /sessions/{own session}/terminate': async (w) => api().post(`/sessions/${await startSession(w.token, A.app)}/terminate`, w.token, {}),
  "POST /sessions/{fellow member's session}/terminate": async (w) =>
    api().post(`/sessions/${await startSession(fellow.token, A.app)}/terminate`, w.token, {}),
  'POST /sessions/{session of other account}/terminate': async (w) =>
    api().post(`/sessions/${await startSession(memberB.token, B.app)}/terminate`, w.token, {}),
  // A session of its own for each: one that its connect timeout ended meanwhile is not live (409).
  'POST /sessions/{own session}/watch': async (w) => api().post(`/sessions/${await startSession(w.token, A.app)}/watch`, w.token, {}),
  "POST /sessions/{fellow member's session}/watch": async (w) =>
    api().post(`/sessions/${await startSession(fellow.token, A.app)}/watch`, w.token, {}),
  'POST /sessions/{session of other account}/watch': async (w) =>
    api().post(`/sessions/${await startSession(memberB.token, B.app)}/watch`, w.token, {}),
  'GET /operations/{own session}': (_w, a) => api().get(`/operations/${ownSession[a]}`, actors[a].token),
  "GET /operations/{fellow member's session}": (w) => api().get(`/operations/${fellowSession}`, w.token),
  'GET /operations/{session of other account}': (w) => api().get(`/operations/${otherSession}`, w.token),
  'GET /apps/{other app}/operations': (w) => api().get(`/apps/${B.app}/operations`, w.token),
  'GET /sessions/{own session}/recording': (_w, a) => api().get(`/sessions/${ownSession[a]}/recording`, actors[a].token),
  "GET /sessions/{fellow member's session}/recording": (w) => api().get(`/sessions/${fellowSession}/recording`, w.token),
  'GET /sessions/{session of other account}/recording': (w) => api().get(`/sessions/${otherSession}/recording`, w.token),
  'GET /accounts/{own account}/log_drains (URL credentials and tokens never shown)': async (w) => {
    if (drainsBuilt) await api().post(`/accounts/${A.account}/log_drains`, admin(), { ...drainBody(), url: 'https://user:secret@127.0.0.1:9/x', token: 'drain-secret' });
    const r = await api().get(`/accounts/${A.account}/log_drains`, w.token);
    expect(JSON.stringify(r.body)).not.toMatch(/secret/);
    return r;
  },
  'GET /accounts/{other account}/log_drains': (w) => api().get(`/accounts/${B.account}/log_drains`, w.token),
  'POST /accounts/{own account}/log_drains': (w) => api().post(`/accounts/${A.account}/log_drains`, w.token, drainBody()),
  'POST /accounts/{other account}/log_drains': (w) => api().post(`/accounts/${B.account}/log_drains`, w.token, drainBody()),
  'DELETE /log_drains/{drain of own account}': async (w) => api().delete(`/log_drains/${await drainOf(A.account)}`, w.token),
  'DELETE /log_drains/{drain of other account}': async (w) => api().delete(`/log_drains/${await drainOf(B.account)}`, w.token),
  'POST /log_drains/{drain of own account}/resume': async (w) => api().post(`/log_drains/${await drainOf(A.account)}/resume`, w.token, {}),
  'POST /accounts/{own account}/redaction_rules': (w) => api().post(`/accounts/${A.account}/redaction_rules`, w.token, { name: uniq('rule'), preset: 'us_ssn' }),
  'POST /accounts/{other account}/redaction_rules': (w) => api().post(`/accounts/${B.account}/redaction_rules`, w.token, { name: uniq('rule'), preset: 'us_ssn' }),
  "GET /audit_events (account admins: their accounts' events only)": async (w, actor) => {
    const r = await wholeList('/audit_events', w);
    if (r.status === 200) {
      expect(r.body.length).toBeGreaterThan(0);
      const accounts = new Set((r.body as { accounts: string[] }[]).flatMap((e) => e.accounts));
      if (actor === 'account_admin') expect([...accounts]).toEqual([A.account]);
      else expect([...accounts]).toEqual(expect.arrayContaining([A.account, B.account]));
    }
    return r;
  },
  'GET /audit_events?account={own account}': (w) => api().get(`/audit_events?account=${A.account}`, w.token),
  'GET /audit_events?account={other account}': (w) => api().get(`/audit_events?account=${B.account}`, w.token),
};
const drainBody = () => ({ handle: uniq('drain'), drain_type: 'https', url: 'https://127.0.0.1:9/ingest' });
async function drainOf(account: string): Promise<number | string> {
  if (!drainsBuilt) return 1;
  const r = await api().post(`/accounts/${account}/log_drains`, admin(), drainBody());
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id;
}

/** A list read to its end, page by page, as a cell's answer. */
async function wholeList(path: string, w: Who): Promise<ApiResponse> {
  const first = await api().get(path, w.token);
  if (first.status !== 200) return first;
  return { ...first, body: await api().listAll(path, w.token) };
}

const lists: Record<string, { get: (w: Who) => Promise<ApiResponse>; check: ListCheck }> = {
  'GET /accounts (lists only)': {
    get: (w) => wholeList('/accounts', w),
    check: (body, kind) => {
      const handles = body.map((a) => a.handle);
      if (kind === 'own') expect(handles).toEqual([A.account]);
      else expect(handles).toEqual(expect.arrayContaining([A.account, B.account]));
    },
  },
  'GET /apps (lists only)': {
    get: (w) => wholeList('/apps', w),
    check: (body, kind) => {
      const accounts = new Set(body.map((a) => a.account));
      if (kind === 'own') expect([...accounts]).toEqual([A.account]);
      else expect(body.map((a) => a.handle)).toEqual(expect.arrayContaining([A.app, B.app]));
    },
  },
  'GET /apps/{own app} (env values)': {
    get: (w) => api().get(`/apps/${A.app}`, w.token),
    check: (body, kind) => {
      const app = body as unknown as { env: Record<string, string> };
      expect(app.env.APP_ENV).toBe(kind === 'hidden' ? '[hidden]' : 'test');
    },
  },
  'GET /sessions (lists only)': {
    get: (w) => wholeList('/sessions', w),
    check: (body, kind, w, actor) => {
      const ids = body.map((s) => s.id);
      expect(ids).toContain(ownSession[actor]);
      if (kind === 'own') expect(body.every((s) => s.user.id === w.id)).toBe(true);
      if (kind === 'account') {
        expect(body.every((s) => s.account === A.account)).toBe(true);
        expect(ids).toContain(fellowSession);
      }
      if (kind === 'all') expect(ids).toEqual(expect.arrayContaining([fellowSession, otherSession]));
    },
  },
  'GET /apps/{own app}/operations (lists only)': {
    get: (w) => wholeList(`/apps/${A.app}/operations`, w),
    check: (body, kind, w, actor) => {
      const ids = body.map((o) => o.id);
      expect(ids).toContain(ownSession[actor]);
      if (kind === 'own') expect(body.every((o) => o.user_email === w.email)).toBe(true);
      else expect(ids).toContain(fellowSession);
    },
  },
};

beforeAll(async () => {
  keyDir = await mkdtemp(path.join(os.tmpdir(), 'essh-matrix-keys-'));
  A = await createTenant(stack, { plan: 'scale' });
  B = await createTenant(stack, { plan: 'scale' });
  const me = (await api().get('/me', admin())).body;
  operatorUser = { token: admin(), id: me.id, email: me.email };
  actors.member = { token: A.token, id: A.user.id, email: A.user.email };
  actors.account_admin = await createUser('account_admin', [A.account]);
  actors.operator = operatorUser;
  fellow = await createUser('member', [A.account]);
  memberB = { token: B.token, id: B.user.id, email: B.user.email };
  inBoth = await createUser('member', [A.account, B.account]);
  for (const a of ACTORS) ownSession[a] = await startSession(actors[a].token, A.app);
  fellowSession = await startSession(fellow.token, A.app);
  otherSession = await startSession(memberB.token, B.app);
  drainsBuilt = '/accounts/{account}/log_drains' in (await api().get('/openapi.json')).body.paths;
}, 60_000);

afterAll(async () => {
  // End every session this file started, so that no container outlives the test.
  const open = (await api().listAll<{ id: number; state: string }>('/sessions', admin())).filter((s) => s.state !== 'ended');
  await Promise.all(open.map((s) => api().post(`/sessions/${s.id}/terminate`, admin(), {})));
  await waitFor('every session to end', async () => {
    const all = await api().listAll<{ state: string }>('/sessions', admin());
    return all.every((s) => s.state === 'ended');
  }, 60_000);
  await rm(keyDir, { recursive: true, force: true });
}, 90_000);

describe('the permission matrix of docs/permissions.md', () => {
  it('has a test for every row and a row for every test', () => {
    expect(matrix.length).toBeGreaterThan(40);
    expect(matrix.map((r) => r.action).sort()).toEqual([...Object.keys(cells), ...Object.keys(lists)].sort());
  });

  const table = matrix.flatMap((row) => ACTORS.map((actor) => ({ ...row, actor, want: row.expect[actor] })));
  it.each(table)('$action as $actor → $want', async ({ action, actor, want }) => {
    const who = actors[actor];
    const list = lists[action];
    if (list) {
      const r = await list.get(who);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      list.check(r.body, want, who, actor);
      return;
    }
    const r = await cells[action]!(who, actor);
    if (action.includes('log_drains') && !drainsBuilt) {
      expect(r.body.message).toMatch(/^No route/);
      return;
    }
    expect(r.status, JSON.stringify(r.body)).toBe(Number(want));
    if (r.status >= 400) {
      expect(r.body).toMatchObject({ error: { 403: 'forbidden', 404: 'not_found' }[r.status] ?? expect.any(String), message: expect.any(String) });
      // A 404 for a hidden resource reads exactly like one for a missing resource.
      if (r.status === 404) expect(r.body.message).toMatch(/was not found, or you may not see it/);
    }
  });
});

describe('tokens', () => {
  it('are shown once, stored hashed, and a revoked token gets 401 everywhere', async () => {
    const t = await api().post(`/users/${fellow.id}/tokens`, fellow.token, { name: 'laptop' });
    expect(t.status).toBe(201);
    expect(t.body.token).toMatch(/^essh_/);
    const listed = await api().get(`/users/${fellow.id}/tokens`, fellow.token);
    expect(JSON.stringify(listed.body)).not.toContain(t.body.token);
    const row = await stack.runtime.db.selectFrom('api_tokens').selectAll().where('id', '=', t.body.id).executeTakeFirstOrThrow();
    expect(row.token_hash).not.toContain(t.body.token);
    expect(row.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect((await api().get('/me', t.body.token)).status).toBe(200);
    expect((await api().delete(`/users/${fellow.id}/tokens/${t.body.id}`, fellow.token)).status).toBe(204);
    for (const [method, p] of [['GET', '/me'], ['GET', '/sessions'], ['POST', `/apps/${A.app}/sessions`], ['GET', `/users/${fellow.id}/tokens`]] as const) {
      const r = await api().request(method, p, t.body.token, method === 'POST' ? {} : undefined);
      expect(r.status, `${method} ${p}`).toBe(401);
      expect(r.body).toMatchObject({ error: 'unauthorized', message: expect.stringMatching(/revoked/) });
    }
    // Revoking twice is a 404: there is no such active token.
    expect((await api().delete(`/users/${fellow.id}/tokens/${t.body.id}`, fellow.token)).status).toBe(404);
  });

  it('an SSH key belongs to one user: the same key twice is a 409, removal frees it', async () => {
    // Both users hold the key here (a copy of one private key): the proof passes, the uniqueness does not.
    const key = await newKey();
    const first = await api().post(`/users/${fellow.id}/ssh_keys`, fellow.token, await provenKey(fellow.id, key));
    expect(first.status).toBe(201);
    expect(first.body.fingerprint).toMatch(/^SHA256:/);
    expect((await api().post(`/users/${memberB.id}/ssh_keys`, memberB.token, await provenKey(memberB.id, key))).status).toBe(409);
    expect((await api().delete(`/users/${fellow.id}/ssh_keys/${first.body.id}`, fellow.token)).status).toBe(204);
    expect((await api().post(`/users/${memberB.id}/ssh_keys`, memberB.token, await provenKey(memberB.id, key))).status).toBe(201);
  });
});
