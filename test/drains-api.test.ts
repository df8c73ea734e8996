import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, useTestStack } from './support/harness.js';
import { selfSignedCert } from './support/drains-receivers.js';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { sealStoredDrainSecrets } from '../drains/service.js';
import { loadSecretBox } from '../lib/secrets.js';

// The drains and redaction-rule routes: validation with clear errors, who may do what, what is shown.
const stack = useTestStack({ parts: { api: true } });
let t: Awaited<ReturnType<typeof createTenant>>;
let adminToken: string;
let ca: string;
let certDir: string;

beforeAll(async () => {
  t = await createTenant(stack);
  const a = await stack.api.post('/users', stack.adminToken, { name: 'Acct Admin', email: `aa-${t.account}@example.com`, role: 'account_admin', accounts: [t.account] });
  adminToken = a.body.token;
  const cert = await selfSignedCert();
  ca = cert.cert;
  certDir = cert.dir;
});
afterAll(async () => {
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

const create = (body: object, token = adminToken, account = t.account) => stack.api.post(`/accounts/${account}/log_drains`, token, body);

describe('log drain validation', () => {
  it.each([
    [{ handle: 'a', drain_type: 'syslog', url: 'syslog://logs.example.com:514' }, /TLS only.*syslog\+tls:\/\/logs\.example\.com:6514/],
    [{ handle: 'a', drain_type: 'syslog', url: 'syslog+tls://logs.example.com' }, /needs a host and a port/],
    [{ handle: 'a', drain_type: 'syslog', url: 'syslog+tls://u:p@logs.example.com:6514' }, /"token"/],
    [{ handle: 'a', drain_type: 'https', url: 'http://logs.example.com/in' }, /must use https/],
    [{ handle: 'a', drain_type: 'https', url: 'not a url' }, /is not a URL.*https:\/\/logs\.example\.com\/ingest/],
    [{ handle: 'a', drain_type: 'https', url: 'https://x.example.com', token: 'abc' }, /takes no "token".*in the url/],
    [{ handle: 'a', drain_type: 'https', url: 'https://x.example.com', index: 'abc' }, /elasticsearch drains only/],
    [{ handle: 'a', drain_type: 'elasticsearch', url: 'https://es.example.com:9200' }, /needs "index"/],
    [{ handle: 'a', drain_type: 'elasticsearch', url: 'https://es.example.com:9200', index: 'Bad Index' }, /lower-case Elasticsearch index name/],
    [{ handle: 'a', drain_type: 'elasticsearch', url: 'https://es.example.com:9200', index: 'logs', pipeline: 'a b' }, /ingest pipeline name/],
    [{ handle: 'a', drain_type: 'https', url: 'https://x.example.com', ca_cert: 'hello' }, /not a PEM certificate/],
    [{ handle: 'a', drain_type: 'syslog', url: 'syslog+tls://h.example.com:6514', token: 'has space' }, /printable ASCII/],
    [{ handle: 'a', drain_type: 'kafka', url: 'https://x.example.com' }, /body\.drain_type/],
    [{ handle: 'a', drain_type: 'https', url: 'https://x.example.com', colour: 'red' }, /colour/],
    [{ handle: 'A B', drain_type: 'https', url: 'https://x.example.com' }, /body\.handle/],
  ])('refuses %j with a clear message', async (body, message) => {
    const r = await create(body);
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.body.error).toBe('invalid_request');
    expect(r.body.message).toMatch(message);
  });
});

describe('log drains', () => {
  it('are created by account admins, shown without secrets and with their delivery state, listed by members', async () => {
    const r = await create({
      handle: 'es', drain_type: 'elasticsearch', url: 'https://elastic:s3cret@es.example.com:9200', index: 'essh-{yyyy}.{MM}.{dd}',
      pipeline: 'p1', token: 'k', ca_cert: ca,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({
      handle: 'es', account: t.account, drain_type: 'elasticsearch', url: 'https://****:****@es.example.com:9200/',
      has_token: true, has_ca_cert: true, index: 'essh-{yyyy}.{MM}.{dd}', pipeline: 'p1', drain_ephemeral_sessions: true,
      status: 'active', paused_reason: null,
      delivery: {
        backlog_bytes: 0, backlog_sessions: 0, delivered_events: 0, failed_events: 0, last_success_at: null, last_error_at: null,
        last_error: null, last_error_status: null,
      },
    });
    expect(JSON.stringify(r.body)).not.toContain('s3cret');
    expect(r.body).not.toHaveProperty('token');
    // In the database the token and the URL (with its password) are sealed: a dump gives neither away.
    const stored = await stack.runtime.db.selectFrom('log_drains').select(['url', 'token']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
    expect(stored.url).toMatch(/^v2\./);
    expect(stored.url).not.toContain('s3cret');
    expect(stored.url).not.toContain('es.example.com');
    expect(stored.token).toMatch(/^v2\./);
    expect(stored.token).not.toBe('k');

    const s = await create({ handle: 'sys', drain_type: 'syslog', url: 'syslog+tls://logs.example.com:6514', drain_ephemeral_sessions: false });
    expect(s.status).toBe(201);
    expect(s.body.drain_ephemeral_sessions).toBe(false);
    expect((await create({ handle: 'sys', drain_type: 'https', url: 'https://x.example.com' })).status).toBe(409);

    const list = await stack.api.get(`/accounts/${t.account}/log_drains`, t.token);
    expect(list.status).toBe(200);
    expect(list.body.items.map((d: any) => d.handle)).toEqual(['es', 'sys']);
    expect(list.body.next_cursor).toBeNull();
    expect((await stack.api.get(`/log_drains/${r.body.id}`, t.token)).body.handle).toBe('es');
  });

  it('show credentials in the URL masked: the password, every query value, secret-looking path segments', async () => {
    const r = await create({ handle: 'hook', drain_type: 'https', url: 'https://u:pw@hooks.example.com/services/T0123/B0123/abcdefGHIJ0123456789xyzw?token=t0k3n&source=essh' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.url).toBe('https://****:****@hooks.example.com/services/T0123/B0123/****?token=****&source=****');
    const listed = (await stack.api.get(`/log_drains/${r.body.id}`, t.token)).body;
    expect(JSON.stringify(listed)).not.toMatch(/abcdefGHIJ0123456789xyzw|t0k3n|:pw@|u:/);
    expect((await stack.api.delete(`/log_drains/${r.body.id}`, adminToken)).status).toBe(204);
  });

  it('show a key given as the URL\'s user name alone (https://KEY@host) masked to members, in the view and the list', async () => {
    const r = await create({ handle: 'userkey', drain_type: 'https', url: 'https://sk_live_Q7hZx2@ingest.example.com/in' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.url).toBe('https://****@ingest.example.com/in');
    const seen = JSON.stringify([
      (await stack.api.get(`/log_drains/${r.body.id}`, t.token)).body,
      (await stack.api.get(`/accounts/${t.account}/log_drains`, t.token)).body,
    ]);
    expect(seen).toContain('https://****@ingest.example.com/in');
    expect(seen).not.toContain('sk_live_Q7hZx2');
    expect((await stack.api.delete(`/log_drains/${r.body.id}`, adminToken)).status).toBe(204);
  });

  it('stored in clear by an earlier version are sealed at start-up and still read', async () => {
    const { db } = stack.runtime;
    const account = await db.selectFrom('accounts').select('id').where('handle', '=', t.account).executeTakeFirstOrThrow();
    const legacy = await db.insertInto('log_drains').values({
      account_id: account.id, handle: 'legacy', drain_type: 'elasticsearch', url: 'https://old:pl4in@es.example.com:9200',
      token: 'old-token', ca_cert: null, index_pattern: 'essh', pipeline: null, drain_ephemeral_sessions: 1,
      delivered_events: 0, failed_events: 0, created_at: new Date().toISOString(),
    }).returning('id').executeTakeFirstOrThrow();
    expect((await stack.api.get(`/log_drains/${legacy.id}`, t.token)).body.url).toBe('https://****:****@es.example.com:9200/');
    await sealStoredDrainSecrets(db, await loadSecretBox({ dataDir: stack.dataDir }));
    const stored = await db.selectFrom('log_drains').select(['url', 'token']).where('id', '=', legacy.id).executeTakeFirstOrThrow();
    expect(stored.url).toMatch(/^v2\./);
    expect(stored.token).toMatch(/^v2\./);
    expect(JSON.stringify(stored)).not.toMatch(/pl4in|old-token/);
    expect((await stack.api.get(`/log_drains/${legacy.id}`, t.token)).body).toMatchObject({ url: 'https://****:****@es.example.com:9200/', has_token: true });
    expect((await stack.api.delete(`/log_drains/${legacy.id}`, adminToken)).status).toBe(204);
  });

  it('are sealed again under a new secrets key at start-up, and a key that is missing is named', async () => {
    const { db } = stack.runtime;
    const r = await create({ handle: 'rotated', drain_type: 'elasticsearch', url: 'https://u:r0tate@es.example.com:9200', token: 'rot-token', index: 'essh' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const storedNow = () => db.selectFrom('log_drains').select(['url', 'token']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
    // The stack's own key, kept in its data dir; the new one as an operator would make it.
    const oldKey = (await readFile(path.join(stack.dataDir, 'secrets.key'), 'utf8')).trim();
    const newKey = randomBytes(32).toString('base64');
    const oldOnly = await loadSecretBox({ dataDir: stack.dataDir });
    const rotating = await loadSecretBox({ dataDir: stack.dataDir, keyBase64: newKey, previousKeysBase64: ` ${oldKey} ` });
    const newOnly = await loadSecretBox({ dataDir: stack.dataDir, keyBase64: newKey });
    try {
      // What the start-up of a process given the new key (and the old one as previous) does.
      expect(await sealStoredDrainSecrets(db, rotating)).toBeGreaterThanOrEqual(1);
      const stored = await storedNow();
      expect(stored.url.startsWith(`v2.${newOnly.keyId}.`)).toBe(true);
      expect(newOnly.open(stored.token!)).toBe('rot-token');
      expect(newOnly.open(stored.url)).toBe('https://u:r0tate@es.example.com:9200');
      expect(await sealStoredDrainSecrets(db, rotating)).toBe(0);
      // A process still on the old key alone cannot read them, and says which key it lacks.
      expect(() => oldOnly.open(stored.token!)).toThrow(new RegExp(`sealed with secrets key ${newOnly.keyId}, which is neither the current key \\(${oldOnly.keyId}\\).*ESSH_SECRETS_KEY_PREVIOUS`));
      await expect(sealStoredDrainSecrets(db, oldOnly)).rejects.toThrow(new RegExp(`log drain \\d+: a stored secret was sealed with secrets key ${newOnly.keyId}`));
    } finally {
      // Back to the key the running stack uses, as a rotation back would.
      await sealStoredDrainSecrets(db, await loadSecretBox({ dataDir: stack.dataDir, previousKeysBase64: newKey }));
    }
    expect((await storedNow()).url.startsWith(`v2.${oldOnly.keyId}.`)).toBe(true);
    expect((await stack.api.get(`/log_drains/${r.body.id}`, adminToken)).body).toMatchObject({ url: 'https://****:****@es.example.com:9200/', has_token: true });
    expect((await stack.api.delete(`/log_drains/${r.body.id}`, adminToken)).status).toBe(204);
  });

  it('may not be managed by members or seen from other accounts', async () => {
    const r = await create({ handle: 'members-cannot', drain_type: 'https', url: 'https://x.example.com' }, t.token);
    expect(r.status).toBe(403);
    expect(r.body.message).toMatch(/admin of this account or an operator/);
    const other = await createTenant(stack);
    expect((await stack.api.get(`/accounts/${t.account}/log_drains`, other.token)).status).toBe(404);
    expect((await create({ handle: 'x', drain_type: 'https', url: 'https://x.example.com' }, other.token)).status).toBe(404);
    const mine = await create({ handle: 'to-delete', drain_type: 'https', url: 'https://x.example.com' });
    expect((await stack.api.get(`/log_drains/${mine.body.id}`, other.token)).status).toBe(404);
    expect((await stack.api.delete(`/log_drains/${mine.body.id}`, other.token)).status).toBe(404);
    expect((await stack.api.delete(`/log_drains/${mine.body.id}`, t.token)).status).toBe(403);
    expect((await stack.api.delete(`/log_drains/${mine.body.id}`, adminToken)).status).toBe(204);
    expect((await stack.api.get(`/log_drains/${mine.body.id}`, adminToken)).status).toBe(404);
    // An operator manages any account's drains.
    expect((await create({ handle: 'by-operator', drain_type: 'https', url: 'https://x.example.com' }, stack.adminToken)).status).toBe(201);
  });
});

describe('redaction rules', () => {
  const rule = (body: object, token = adminToken) => stack.api.post(`/accounts/${t.account}/redaction_rules`, token, body);
  it('take a regular expression or a preset, and refuse bad ones clearly', async () => {
    expect((await rule({ name: 'cards', preset: 'card_number' })).body).toMatchObject({ preset: 'card_number', replacement: '[REDACTED CARD]' });
    expect((await rule({ name: 'tokens', pattern: 'tok_[a-z0-9]+', replacement: '<tok>' })).status).toBe(201);
    const bad = await rule({ name: 'bad', pattern: '(unclosed' });
    expect(bad.status).toBe(422);
    expect(bad.body.message).toMatch(/not a valid regular expression/);
    expect((await rule({ name: 'empty', pattern: 'x*' })).body.message).toMatch(/matches the empty string/);
    // Patterns are RE2: nested repetition is harmless (linear time), lookaround and backreferences do not exist.
    const nested = await rule({ name: 'nested', pattern: '(a+)+$' });
    expect(nested.status, JSON.stringify(nested.body)).toBe(201);
    const lookahead = await rule({ name: 'lookahead', pattern: 'secret(?=\\d)' });
    expect(lookahead.status).toBe(422);
    expect(lookahead.body.message).toMatch(/not a valid regular expression in RE2 syntax.*without lookaround or backreferences/);
    expect((await rule({ name: 'long', pattern: 'a'.repeat(1001) })).status).toBe(422);
    expect((await stack.api.delete(`/redaction_rules/${nested.body.id}`, adminToken)).status).toBe(204);
    expect((await rule({ name: 'both', pattern: 'x', preset: 'us_ssn' })).body.message).toMatch(/either "pattern".*or "preset"/);
    expect((await rule({ name: 'none' })).status).toBe(422);
    expect((await rule({ name: 'unknown', preset: 'passport' })).status).toBe(422);
    expect((await rule({ name: 'member', preset: 'us_ssn' }, t.token)).status).toBe(403);
    const list = await stack.api.get(`/accounts/${t.account}/redaction_rules`, t.token);
    expect(list.body.items.map((r: any) => r.name)).toEqual(['cards', 'tokens']);
    expect((await stack.api.delete(`/redaction_rules/${list.body.items[1].id}`, adminToken)).status).toBe(204);
    expect((await stack.api.get(`/accounts/${t.account}/redaction_rules`, t.token)).body.items).toHaveLength(1);
  });

  it('are at most 20 per account', async () => {
    const other = await createTenant(stack);
    const add = (i: number) => stack.api.post(`/accounts/${other.account}/redaction_rules`, stack.adminToken, { name: `r${i}`, pattern: `secret${i}` });
    for (let i = 0; i < 20; i++) expect((await add(i)).status).toBe(201);
    const over = await add(20);
    expect(over.status).toBe(409);
    expect(over.body.message).toMatch(/already has 20 redaction rules.*delete one/);
  });

  it('are in the OpenAPI document with the drain routes', async () => {
    const doc = (await stack.api.get('/openapi.json')).body;
    for (const p of ['/accounts/{account}/log_drains', '/log_drains/{id}', '/log_drains/{id}/resume', '/accounts/{account}/redaction_rules', '/sessions/{id}/recording']) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
  });
});
