import { beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, createTenant, runInSession, startTestStack, useTestStack, type ApiResponse } from './support/harness.js';
import { startRuntime } from '../server/runtime.js';
import { createLogger } from '../lib/log.js';

/**
 * Input hardening of the REST API: body size limit, schema validation on every route, the per-token
 * rate limit on session creation, one error format, and no internals in any answer.
 */

const RATE = 3;
const DOWNLOADS = 4;
const stack = useTestStack({ env: { ESSH_SESSION_CREATE_RATE: String(RATE), ESSH_RECORDING_DOWNLOAD_RATE: String(DOWNLOADS) } });
let tenant: Awaited<ReturnType<typeof createTenant>>;
const seen: ApiResponse[] = [];

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
  // Every answer this file gets goes through the error-format checks at the end.
  const request = stack.api.request.bind(stack.api);
  stack.api.request = async (...args) => {
    const r = await request(...args);
    seen.push(r);
    return r;
  };
});


/**
 * The limiter counts in fixed windows of a wall-clock minute (services/rate-limit.ts), so a sequence
 * that must stay within one window starts early in one: under CI's load, the session-creation
 * sequence once straddled a minute's edge and its last request found a fresh budget.
 */
async function atLeastSecondsLeftInWindow(seconds: number) {
  const left = 60 - (Date.now() / 1000) % 60;
  if (left < seconds) await new Promise((resolve) => setTimeout(resolve, left * 1000 + 50));
}

function expectError(r: ApiResponse, status: number, error: string, message?: RegExp) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body).toMatchObject({ error, message: expect.any(String) });
  if (message) expect(r.body.message).toMatch(message);
}

describe('bodies', () => {
  it('a body over 64 KB is refused with 413 before any work', async () => {
    const big = { handle: 'big-app', account: tenant.account, stack: 'local', image: 'x', env: { BIG: 'x'.repeat(70 * 1024) } };
    expectError(await stack.api.post('/apps', stack.adminToken, big), 413, 'invalid_request', /larger than 64 KB/);
    expect((await stack.api.get('/apps/big-app', stack.adminToken)).status).toBe(404);
  });

  it('malformed JSON is a 400 that says so', async () => {
    expectError(await stack.api.post('/accounts', stack.adminToken, '{"handle": "x",'), 400, 'invalid_request', /not valid JSON/);
    expectError(await stack.api.post('/accounts', stack.adminToken, '"just a string"'), 400, 'invalid_request');
  });

  it('unknown fields, wrong types and bad values are 422s naming the field', async () => {
    const cases: [string, object, RegExp][] = [
      [`/apps/${tenant.app}/sessions`, { command: 'ls' }, /body\.command/],
      [`/apps/${tenant.app}/sessions`, { command: [] }, /body\.command/],
      [`/apps/${tenant.app}/sessions`, { command: ['sh\0'] }, /NUL/],
      [`/apps/${tenant.app}/sessions`, { container_size_mb: 64 }, /at least 128 MB/],
      [`/apps/${tenant.app}/sessions`, { container_size_mb: 1e9 }, /at most 65536 MB/],
      [`/apps/${tenant.app}/sessions`, { privileged: true }, /privileged/],
      ['/accounts', { handle: 'Bad Handle', plan: 'scale' }, /body\.handle/],
      ['/accounts', { handle: 'ok', plan: 'free-for-all' }, /body\.plan/],
      ['/users', { name: 'x', email: 'not-an-email', role: 'member', accounts: [] }, /body\.email/],
      ['/users', { name: 'x', email: 'a@example.com', role: 'root', accounts: [] }, /body\.role/],
      ['/apps', { handle: 'a1', account: tenant.account, stack: 'local', image: 'x', working_dir: 'relative' }, /absolute path/],
      ['/apps', { handle: 'a1', account: tenant.account, stack: 'local', image: 'x', env: { 'BAD-NAME': 'v' } }, /body\.env\.BAD-NAME: environment variable names are letters/],
      ['/users/1/ssh_key_challenges', { public_key: 'ssh-ed25519 AAAA' }, /does not match its type|Not an OpenSSH public key/],
      ['/users/1/ssh_keys', { public_key: 'ssh-ed25519 AAAA' }, /body\.challenge.*body\.signature|body\.signature.*body\.challenge/s],
    ];
    for (const [p, body, message] of cases) {
      const r = await stack.api.post(p, stack.adminToken, body);
      expectError(r, 422, 'invalid_request', message);
    }
  });

  it('an empty program is refused at app creation, app change and session creation, and the app keeps running sessions', async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    const program = /body\.command: the first element is the program to run and may not be empty/;
    for (const command of [[''], ['  ', '-c', 'true']]) {
      expectError(await stack.api.post('/apps', stack.adminToken, { handle: 'empty-prog', account: t.account, stack: 'local', image: 'x', command }), 422, 'invalid_request', program);
      expectError(await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { command }), 422, 'invalid_request', program);
      expectError(await stack.api.post(`/apps/${t.app}/sessions`, t.token, { command }), 422, 'invalid_request', program);
    }
    expectError(await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { command: [] }), 422, 'invalid_request', /give at least the program to run/);
    expect((await stack.api.get('/apps/empty-prog', stack.adminToken)).status).toBe(404);
    expect((await stack.api.get(`/apps/${t.app}`, stack.adminToken)).body.command).toBeNull();
    // The refused change changed nothing: a session of the app still runs (the engine was never given "").
    const r = await runInSession(stack, t, { command: ['sh', '-c', 'echo still runs'] });
    expect(r.stdout.toString()).toBe('still runs\n');
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { command: ['sh', '-c', 'echo app command'] })).status).toBe(200);
  });

  it('path and query parameters are validated: 400 naming the parameter', async () => {
    for (const p of ['/sessions/abc', '/sessions/-1', '/sessions/1.5', '/sessions/99999999999999999999', '/users/0/tokens']) {
      expectError(await stack.api.get(p, stack.adminToken), 400, 'invalid_request', /path\.id/);
    }
    expectError(await stack.api.get('/sessions?state=sleeping', stack.adminToken), 400, 'invalid_request', /query\.state/);
    expectError(await stack.api.get('/sessions?evil=1', stack.adminToken), 400, 'invalid_request', /evil/);
    expectError(await stack.api.get('/apps/UPPER', stack.adminToken), 400, 'invalid_request', /path\.app/);
  });

  it('every route with a body or parameters validates them (from the route table in /openapi.json)', async () => {
    const doc = (await stack.api.get('/openapi.json')).body as { paths: Record<string, Record<string, any>> };
    let checked = 0;
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const params = (op.parameters ?? []) as { name: string; in: string }[];
        const concrete = p.replace(/\{(\w+)\}/g, (_m, name: string) => (/id$/i.test(name) ? '1' : 'x'));
        if (op.requestBody) {
          const r = await stack.api.request(method.toUpperCase(), concrete, stack.adminToken, { surely_not_a_field: 1 });
          expect([400, 404, 422], `${method} ${p}: ${JSON.stringify(r.body)}`).toContain(r.status);
          checked++;
        }
        if (params.some((x) => x.in === 'path')) {
          const bad = p.replace(/\{(\w+)\}/g, '%00..%2F');
          const r = await stack.api.request(method.toUpperCase(), bad, stack.adminToken, method === 'get' || method === 'delete' ? undefined : {});
          expect(r.status, `${method} ${bad}: ${JSON.stringify(r.body)}`).toBe(400);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(15);
  });
});

describe('authentication errors', () => {
  it('a missing, malformed or unknown token is a 401 with the way out', async () => {
    expectError(await stack.api.get('/sessions'), 401, 'unauthorized', /Authorization: Bearer/);
    expectError(await stack.api.request('GET', '/sessions', undefined), 401, 'unauthorized');
    const basic = await fetch(`${stack.url}/sessions`, { headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } });
    expect(basic.status).toBe(401);
    expect(await basic.json()).toMatchObject({ error: 'unauthorized', message: expect.stringMatching(/Bearer <token>/) });
    expectError(await stack.api.get('/sessions', 'essh_not-a-real-token'), 401, 'unauthorized', /not valid/);
  });

  it('an unknown route is a JSON 404, an unknown method of a known path a JSON 405 with Allow; both point at /openapi.json', async () => {
    expectError(await stack.api.get('/nope', stack.adminToken), 404, 'not_found', /openapi\.json/);
    const put = await stack.api.request('PUT', '/sessions/1', stack.adminToken, {});
    expectError(put, 405, 'method_not_allowed', /openapi\.json/);
    expect(put.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    // Before the token is looked at: the method is wrong whoever asks.
    expect((await stack.api.request('DELETE', '/sessions')).status).toBe(405);
    const options = await stack.api.request('OPTIONS', '/apps/x');
    expect(options.status).toBe(204);
    expect(options.headers.get('allow')).toBe('GET, PATCH, HEAD, OPTIONS');
  });
});

describe('rate limit on recording downloads', () => {
  it(`per user: ${DOWNLOADS} a minute, then 429 rate_limited with Retry-After and a sentence; asking for others' sessions counts too; another user has its own budget`, async () => {
    const t = await createTenant(stack, { plan: 'scale' });
    const run = await runInSession(stack, t, { command: ['sh', '-c', 'echo recorded'] });
    const download = (token: string, id = run.id) => stack.api.get(`/sessions/${id}/recording`, token);
    await atLeastSecondsLeftInWindow(20);
    for (let i = 0; i < DOWNLOADS - 1; i++) {
      const r = await download(t.token);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(String(r.body)).toContain('recorded');
    }
    expect((await download(t.token, 999_999_999_999)).status).toBe(404); // the last of the minute's budget
    const limited = await download(t.token);
    expectError(limited, 429, 'rate_limited', new RegExp(`^Too many recordings downloaded by ${t.user.email.replace(/[.+]/g, '\\$&')}: at most ${DOWNLOADS} a minute .*Try again in \\d+ s\\.$`));
    const retry = Number(limited.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(limited.body.retry_after_s).toBe(retry);
    expect((await download(stack.adminToken)).status).toBe(200);
  });
});

describe('rate limit on session creation', () => {
  it(`per user: ${RATE} a minute, then 429 rate_limited with Retry-After, whichever token or API process; another user has its own budget`, async () => {
    const body = { command: ['sleep', '600'] };
    await atLeastSecondsLeftInWindow(30);
    for (let i = 0; i < RATE; i++) expect((await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, body)).status).toBe(201);
    const limited = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, body);
    expectError(limited, 429, 'rate_limited', new RegExp(`at most ${RATE} a minute`));
    const retry = Number(limited.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(limited.body.retry_after_s).toBe(retry);
    // The refused request made no session.
    const mine = (await stack.api.get(`/sessions?user=${tenant.user.id}`, stack.adminToken)).body.items as unknown[];
    expect(mine).toHaveLength(RATE);
    // The same user's second token shares the budget, and so does a second API process on the same database.
    const second = await stack.api.post(`/users/${tenant.user.id}/tokens`, tenant.token, { name: 'second' });
    expectError(await stack.api.post(`/apps/${tenant.app}/sessions`, second.body.token, body), 429, 'rate_limited');
    const otherApi = await startRuntime(stack.config, { api: true }, createLogger('silent'));
    try {
      const viaOther = await new ApiClient(otherApi.apiUrl!).post(`/apps/${tenant.app}/sessions`, tenant.token, body);
      expect(viaOther.status, JSON.stringify(viaOther.body)).toBe(429);
    } finally {
      await otherApi.stop();
    }
    // Another user of the same account has a budget of its own.
    const other = await stack.api.post('/users', stack.adminToken, { name: 'Other', email: `other-${Date.now()}@example.com`, role: 'member', accounts: [tenant.account] });
    expect((await stack.api.post(`/apps/${tenant.app}/sessions`, other.body.token, body)).status).toBe(201);
    // Other routes are not limited.
    expect((await stack.api.get('/sessions', tenant.token)).status).toBe(200);
  });
});

describe('internal failures', () => {
  it('when Temporal is unreachable, session creation is a 503 with a sentence, and the slot is not kept', async () => {
    // An API without a worker of its own (which would start workflows on its worker's connection),
    // whose connection to Temporal is gone.
    const apiOnly = await startTestStack({ parts: { api: true } });
    try {
      const t = await createTenant(apiOnly, { plan: 'development' });
      await apiOnly.runtime.client.connection.close();
      const r = await apiOnly.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['true'] });
      seen.push(r);
      expectError(r, 503, 'unavailable', /Try again/);
      const rows = await apiOnly.runtime.db.selectFrom('operations').innerJoin('accounts', 'accounts.id', 'operations.account_id')
        .select(['operations.state', 'operations.end_reason']).where('accounts.handle', '=', t.account).execute();
      expect(rows).toEqual([{ state: 'ended', end_reason: 'provision_failed' }]);
    } finally {
      await apiOnly.stop();
    }
  });

  it('no answer in this file carried a stack trace, a file path or a SQL error, and every error had the one format', () => {
    expect(seen.length).toBeGreaterThan(40);
    for (const r of seen) {
      const text = JSON.stringify(r.body ?? null); // a 204 (OPTIONS) has no body
      expect(text).not.toMatch(/\bat .+\.(ts|js):\d+|node_modules|\/work\/|SQLITE_|syntax error at|relation "/);
      if (r.status >= 400) expect(Object.keys(r.body).slice(0, 2)).toEqual(['error', 'message']);
    }
  });
});
