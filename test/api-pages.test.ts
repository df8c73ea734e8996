import { beforeAll, describe, expect, it } from 'vitest';
import { createTenant, useTestStack, type ApiResponse } from './support/harness.js';

/**
 * Cursor pagination of the lists (services/pages.ts) and the shape of /openapi.json (api/app.ts).
 * test/fuzz-schemathesis.test.ts holds the API to that document; this file checks the document says
 * what the issue asked of it.
 */

const stack = useTestStack();
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
});

const admin = () => stack.adminToken;
async function newUser(i: number) {
  const r = await stack.api.post('/users', admin(), { name: `Paged ${i}`, email: `paged-${i}-${Date.now()}@example.com`, role: 'member', accounts: [tenant.account] });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as number;
}

describe('lists are paginated by cursor', () => {
  it('a page holds `limit` items (100 by default, 500 at most) and next_cursor leads to the rest, oldest first', async () => {
    for (let i = 0; i < 101; i++) await newUser(i);
    const all = await stack.api.listAll<{ id: number }>('/users', admin());
    expect(all.length).toBeGreaterThanOrEqual(103); // the operator, the tenant's member and these
    expect(all.map((u) => u.id)).toEqual([...all.map((u) => u.id)].sort((a, b) => a - b));

    const first = await stack.api.get('/users', admin());
    expect(first.status).toBe(200);
    expect(Object.keys(first.body).sort()).toEqual(['items', 'next_cursor']);
    expect(first.body.items).toHaveLength(100);
    expect(first.body.next_cursor).toMatch(/^[A-Za-z0-9_-]{11}$/);

    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: ApiResponse = await stack.api.get(`/users?limit=7${cursor ? `&cursor=${cursor}` : ''}`, admin());
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.items.length).toBeLessThanOrEqual(7);
      seen.push(...r.body.items.map((u: { id: number }) => u.id));
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual(all.map((u) => u.id));
    expect(pages).toBe(Math.ceil(all.length / 7));

    const whole = await stack.api.get('/users?limit=500', admin());
    expect(whole.body.items).toHaveLength(all.length);
    expect(whole.body.next_cursor).toBeNull();
  });

  it('is stable when items are added between pages: nothing is skipped or repeated', async () => {
    // Users, oldest first: a new one comes at the end.
    const before = await stack.api.listAll<{ id: number }>('/users', admin());
    const p1 = await stack.api.get('/users?limit=5', admin());
    const added = await newUser(1000);
    const rest = await stack.api.listAll<{ id: number }>(`/users?cursor=${p1.body.next_cursor}`, admin());
    expect([...p1.body.items, ...rest].map((u: { id: number }) => u.id)).toEqual([...before.map((u) => u.id), added]);

    // Sessions, newest first: a new one comes before the first page, never inside the ones after it.
    const ids: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command: ['true'], start_on_connect: true });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
    }
    const page1 = await stack.api.get(`/sessions?app=${tenant.app}&limit=2`, tenant.token);
    expect(page1.body.items.map((x: { id: number }) => x.id)).toEqual([ids[3], ids[2]]);
    const newer = (await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command: ['true'], start_on_connect: true })).body.id;
    const page2 = await stack.api.get(`/sessions?app=${tenant.app}&limit=2&cursor=${page1.body.next_cursor}`, tenant.token);
    expect(page2.body.items.map((x: { id: number }) => x.id)).toEqual([ids[1], ids[0]]);
    expect(page2.body.next_cursor).toBeNull();
    expect((await stack.api.get(`/sessions?app=${tenant.app}&limit=1`, tenant.token)).body.items[0].id).toBe(newer);
    // Filters and permissions hold on every page: another member's cursor shows nothing of this one's.
    const other = await createTenant(stack, { plan: 'scale' });
    const theirs = await stack.api.get(`/sessions?cursor=${page1.body.next_cursor}`, other.token);
    expect(theirs.body).toEqual({ items: [], next_cursor: null });
  });

  it('refuses a limit out of range and a malformed cursor with 400; a well-formed cursor is a position', async () => {
    for (const q of ['limit=0', 'limit=501', 'limit=ten', 'cursor=not-a-cursor', 'cursor=AAAAAAAAAAAA', 'cursor=AAAAAAAAAA%3D']) {
      const r = await stack.api.get(`/users?${q}`, admin());
      expect(r.status, q).toBe(400);
      expect(r.body).toMatchObject({ error: 'invalid_request', message: expect.stringMatching(/query\.(limit|cursor)/) });
    }
    // Before every id / past every id.
    expect((await stack.api.get('/users?cursor=AAAAAAAAAAA', admin())).body.items.length).toBeGreaterThan(0);
    expect((await stack.api.get('/users?cursor=__________8', admin())).body).toEqual({ items: [], next_cursor: null });
    expect((await stack.api.get('/sessions?cursor=AAAAAAAAAAA', admin())).body).toEqual({ items: [], next_cursor: null });
  });

  it('every list takes limit and cursor and answers { items, next_cursor }', async () => {
    const lists = [
      '/sessions', `/apps/${tenant.app}/operations`, '/accounts', '/stacks', '/apps', '/users',
      `/users/${tenant.user.id}/tokens`, `/users/${tenant.user.id}/ssh_keys`,
      `/accounts/${tenant.account}/log_drains`, `/accounts/${tenant.account}/redaction_rules`, '/audit_events',
    ];
    for (const p of lists) {
      const r = await stack.api.get(`${p}?limit=1`, admin());
      expect(r.status, `${p}: ${JSON.stringify(r.body)}`).toBe(200);
      expect(Object.keys(r.body).sort(), p).toEqual(['items', 'next_cursor']);
      expect(r.body.items.length, p).toBeLessThanOrEqual(1);
    }
  });
});

describe('/openapi.json', () => {
  let doc: any;
  beforeAll(async () => {
    doc = (await stack.api.get('/openapi.json')).body;
  });
  const operations = () => Object.entries(doc.paths as Record<string, Record<string, any>>)
    .flatMap(([p, ops]) => Object.entries(ops).map(([method, op]) => ({ p, method, op })));
  const resolve = (ref: string) => ref.replace(/^#\//, '').split('/').reduce((o: any, k) => o?.[k], doc);

  it('is OpenAPI 3.1 with an operationId, a tag and an answer schema for every status of every operation', () => {
    expect(doc.openapi).toBe('3.1.0');
    const ops = operations();
    expect(ops.length).toBeGreaterThan(35);
    expect(new Set(ops.map((o) => o.op.operationId)).size).toBe(ops.length);
    for (const { p, method, op } of ops) {
      const what = `${method} ${p}`;
      expect(op.operationId, what).toMatch(/^[a-z][A-Za-z]+$/);
      expect(op.tags, what).toHaveLength(1);
      expect(doc.tags.map((t: { name: string }) => t.name), what).toContain(op.tags[0]);
      expect(Object.keys(op.responses), what).toEqual(expect.arrayContaining(['400', '500']));
      for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
        const r = response.$ref ? resolve(response.$ref) : response;
        expect(r, `${what} ${status}`).toBeTruthy();
        if (status === '204') continue;
        const content = Object.entries(r.content ?? {}) as [string, { schema: unknown }][];
        expect(content.length, `${what} ${status} has a body`).toBe(1);
        expect(content[0]![1].schema, `${what} ${status}`).toBeTruthy();
        if (Number(status) >= 400) expect(content[0]![1].schema).toEqual({ $ref: '#/components/schemas/Error' });
      }
      if (op.requestBody) expect(Object.keys(op.responses), what).toEqual(expect.arrayContaining(['413', '422']));
      if (op.security.length) expect(Object.keys(op.responses), what).toContain('401');
    }
    // Every $ref points somewhere.
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
    for (const ref of new Set(refs)) expect(resolve(JSON.parse(`{${ref}}`).$ref), ref).toBeTruthy();
  });

  it('shares the resources as component schemas, and documents 405, 413 and 429', () => {
    for (const name of ['Session', 'CreatedSession', 'Operation', 'Error', 'Drain', 'App', 'Account', 'User', 'Stack', 'SshKey', 'ApiToken', 'RedactionRule']) {
      expect(doc.components.schemas[name], name).toBeTruthy();
    }
    const get = (p: string, m = 'get') => doc.paths[p][m];
    expect(get('/sessions/{id}').responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Session' });
    expect(get('/sessions').responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/SessionList' });
    expect(doc.components.schemas.SessionList.properties.items.items).toEqual({ $ref: '#/components/schemas/Session' });
    expect(get('/sessions/{id}/recording').responses['200'].content).toHaveProperty(['application/x-asciicast']);
    expect(get('/metrics').responses['200'].content).toHaveProperty(['text/plain']);
    expect(get('/healthz').security).toEqual([]);
    expect(get('/openapi.json').operationId).toBe('getOpenApi');
    expect(doc.components.responses.MethodNotAllowed.headers.Allow.required).toBe(true);
    expect(get('/apps/{app}/sessions', 'post').responses['429']).toEqual({ $ref: '#/components/responses/TooManyRequests' });
    expect(get('/apps/{app}/sessions', 'post').responses['413']).toEqual({ $ref: '#/components/responses/ContentTooLarge' });
    expect(get('/sessions').responses).not.toHaveProperty('429');
  });

  it('gives every list the same limit (default and maximum stated) and cursor parameters', () => {
    const lists = operations().filter(({ op }) => /List$/.test(op.responses['200']?.content?.['application/json']?.schema?.$ref ?? ''));
    expect(lists.length).toBe(13);
    for (const { p, op } of lists) {
      expect(op.parameters, p).toEqual(expect.arrayContaining([{ $ref: '#/components/parameters/Limit' }, { $ref: '#/components/parameters/Cursor' }]));
    }
    expect(doc.components.parameters.Limit.schema).toEqual({ type: 'integer', minimum: 1, maximum: 500, default: 100 });
    expect(doc.components.parameters.Cursor.schema).toMatchObject({ type: 'string', pattern: '^[A-Za-z0-9_-]{11}$' });
  });
});
