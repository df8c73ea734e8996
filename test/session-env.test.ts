// Extra env for one session (`env` of POST /apps/{app}/sessions, `essh ssh APP -e KEY=VALUE`), as
// `heroku run -e` and `fly console -e` give it, on a real stack: the program started by `docker exec`
// through the real SSH portal sees it over the app's env, and its values are nowhere else: not in the
// database in clear (and not at all once the session has ended), not in the Temporal history, not in
// any answer of the API, the drains, the journal, the recording or the project's own log.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { sealStoredEnvs } from '../domain/app-env.js';
import { SecretBox } from '../lib/secrets.js';
import { journalPath } from '../journal/writer.js';
import { MAX_SESSION_ENV_BYTES, MAX_SESSION_ENV_VARIABLES } from '../shapes/requests.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { createTenant, openSession, useTestStack, waitFor, waitForState } from './support/harness.js';
import { run, runToEnd } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh.js');

const stack = useTestStack({ env: { ESSH_LOG_LEVEL: 'debug' }, logDestination: { write: (line) => void logLines.push(line) } });
const rx = useHttpsReceiver();
let tenant: Awaited<ReturnType<typeof createTenant>>;
/** Every line of the runtime's own log (API, portal, worker, host) while this file runs, at debug level. */
const logLines: string[] = [];

beforeAll(async () => {
  // The app's env has APP_ENV and DATABASE_URL; the sessions below override one and keep the other.
  tenant = await createTenant(stack, { env: { APP_ENV: 'from-the-app', DATABASE_URL: 'postgres://app@db/app' } });
  await addHttpsDrain(stack, rx, tenant.account, 'https-drain', '/env');
});

/** A value no other part of the stack could print by chance. */
const secretValue = () => `s3cr3t-${randomBytes(12).toString('hex')}`;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * A Temporal history's text: every string and every byte field (the payloads, JSON in UTF-8) decoded,
 * so that a value in any of them shows as it is (JSON.stringify would give the payloads in base64).
 */
function historyText(history: unknown): string {
  const parts: string[] = [];
  const walk = (v: unknown) => {
    if (v instanceof Uint8Array) parts.push(Buffer.from(v).toString('utf8'));
    else if (typeof v === 'string') parts.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') for (const k of Object.keys(v)) walk((v as Record<string, unknown>)[k]);
  };
  walk(history);
  return parts.join('\n');
}

describe('a session\'s extra env', () => {
  it('reaches the program over the app\'s env, and its value is nowhere else: database, Temporal, API, drains, journal, recording, log', async () => {
    const value = secretValue();
    // The program proves it saw the value without printing it: its output is the value's digest.
    const s = await openSession(stack, tenant, {
      // It waits (for a file the test makes) so that the record can be read while it runs.
      command: ['sh', '-c', 'printf %s "$SESSION_SECRET" | sha256sum; echo "app_env=$APP_ENV db=$DATABASE_URL"; until [ -e /tmp/go ]; do sleep 0.2; done'],
      body: { env: { SESSION_SECRET: value, APP_ENV: 'from-the-session' } },
    });
    // While it runs: the record holds the env sealed (under the secrets key's id), never in clear.
    await waitFor('the program to start', async () => s.stdout().toString().includes('app_env='), 30_000, 100);
    // The portal attaches as soon as the host knows the container, before the workflow records it.
    const row = await waitFor('the record to name the container', async () => {
      const r = await stack.runtime.db.selectFrom('operations').selectAll().where('id', '=', s.id).executeTakeFirstOrThrow();
      return r.container_id ? r : undefined;
    }, 30_000, 100);
    expect(row.env).toMatch(new RegExp(`^v2\\.${stack.runtime.secrets.keyId}\\.`));
    expect(JSON.stringify(row)).not.toContain(value);
    expect(stack.runtime.secrets.open(row.env!)).toContain(value);
    // Nor in the Temporal workflow's history (its input and everything since), which does show the session.
    const running = historyText(await stack.runtime.client.workflow.getHandle(`ssh-session-${s.id}`).fetchHistory());
    expect(running).toContain(tenant.app);
    expect(running).not.toContain(value);

    await run('docker', ['exec', row.container_id!, 'touch', '/tmp/go']);
    const done = await s.done;
    expect(done.exitCode).toBe(0);
    expect(done.stdout.toString()).toBe(`${sha256(value)}  -\napp_env=from-the-session db=postgres://app@db/app\n`);

    // The API never shows it: the session, the list, the Operation (a session shows no env at all; only
    // its command names the variable here).
    const shown = [
      await stack.api.get(`/sessions/${s.id}`, tenant.token),
      await stack.api.get(`/sessions?app=${tenant.app}`, tenant.token),
      await stack.api.get(`/sessions`, stack.adminToken),
      await stack.api.get(`/operations/${s.id}`, tenant.token),
      await stack.api.get(`/apps/${tenant.app}/operations`, stack.adminToken),
    ];
    for (const r of shown) {
      expect(r.status).toBe(200);
      expect(JSON.stringify(r.body)).not.toContain(value);
    }
    // Once it has ended the sealed env is gone too: nothing starts in an ended session.
    const after = await stack.runtime.db.selectFrom('operations').select('env').where('id', '=', s.id).executeTakeFirstOrThrow();
    expect(after.env).toBeNull();

    // The drains learn that extra env was given, by name only, in session_started.
    const events = await waitFor('the drain\'s session_ended event', async () => {
      const mine = eventsOf(rx).filter((e) => e.operation_id === s.id);
      return mine.some((e) => e.event === 'session_ended') ? mine : undefined;
    }, 60_000);
    const started = events.find((e) => e.event === 'session_started')!;
    expect(started.env_keys).toEqual(['APP_ENV', 'SESSION_SECRET']);
    expect(started.log).toMatch(/extra env APP_ENV, SESSION_SECRET\)$/);
    expect(events.some((e) => e.stream === 'stdout' && e.log.includes(sha256(value)))).toBe(true);
    expect(JSON.stringify(rx.requests)).not.toContain(value);
    // Nor the journal on the host, the recording made from it, the whole history, or the log.
    expect((await readFile(journalPath(stack.dataDir, s.id))).includes(value)).toBe(false);
    const rec = await stack.api.get(`/sessions/${s.id}/recording`, tenant.token);
    expect(rec.status).toBe(200);
    expect(String(rec.body)).toContain(sha256(value));
    expect(String(rec.body)).not.toContain(value);
    const ended = historyText(await stack.runtime.client.workflow.getHandle(`ssh-session-${s.id}`).fetchHistory());
    expect(ended).not.toContain(value);
    const log = logLines.join('');
    expect(log).toMatch(new RegExp(`"session":${s.id}[^\\n]*"msg":"client attached"`));
    expect(log).not.toContain(value);
  }, 120_000);

  it('refuses bad input with a 422 that says what is wrong, and never repeats a value', async () => {
    const value = secretValue();
    const tooMany = Object.fromEntries(Array.from({ length: MAX_SESSION_ENV_VARIABLES + 1 }, (_, i) => [`V${i}`, value]));
    const cases: [unknown, RegExp][] = [
      [{ '1BAD': value }, /body\.env\.1BAD: environment variable names are letters, digits and "_", not starting with a digit/],
      [{ 'BAD-NAME': value }, /body\.env\.BAD-NAME: environment variable names are letters/],
      [{ '': value }, /body\.env\.: environment variable names are letters/],
      [{ GOOD: 42 }, /body\.env\.GOOD: .*string/i],
      [{ GOOD: `${value}\u0000` }, /body\.env\.GOOD: must not contain NUL bytes/],
      [tooMany, new RegExp(`body\\.env: at most ${MAX_SESSION_ENV_VARIABLES} variables for one session`)],
      [{ A: 'x'.repeat(20_000), B: 'y'.repeat(20_000) }, new RegExp(`body\\.env: the names and values together may be at most ${MAX_SESSION_ENV_BYTES} bytes`)],
      [['A=b'], /body\.env: an object of names and string values, e\.g\. \{"LOG_LEVEL": "debug"\}/],
    ];
    for (const [env, problem] of cases) {
      const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { env });
      expect(r.status, JSON.stringify(env).slice(0, 80)).toBe(422);
      expect(r.body.error).toBe('invalid_request');
      expect(r.body.message).toMatch(/^Invalid request: .*\.$/);
      expect(r.body.problems.join('\n')).toMatch(problem);
      expect(JSON.stringify(r.body)).not.toContain(value);
    }
    // At the bounds it is taken (and an empty env is no env).
    const atBounds = Object.fromEntries(Array.from({ length: MAX_SESSION_ENV_VARIABLES }, (_, i) => [`V${i}`, 'v']));
    for (const env of [atBounds, {}]) {
      const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { env });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const row = await stack.runtime.db.selectFrom('operations').select('env').where('id', '=', r.body.id).executeTakeFirstOrThrow();
      expect(row.env === null).toBe(Object.keys(env).length === 0);
      await stack.api.post(`/sessions/${r.body.id}/terminate`, tenant.token, {});
    }
    // /openapi.json states the bound on the count.
    const spec = (await stack.api.get('/openapi.json')).body;
    const body = spec.paths['/apps/{app}/sessions'].post.requestBody.content['application/json'].schema;
    expect(JSON.stringify(body)).toContain(`"maxProperties":${MAX_SESSION_ENV_VARIABLES}`);
  }, 60_000);

  it('essh ssh APP -e KEY=VALUE (repeatable) gives the program that env; a malformed -e is one line naming it', async () => {
    const env = { ...process.env, ESSH_API_URL: stack.url, ESSH_TOKEN: tenant.token, ESSH_CONFIG: path.join(stack.dataDir, 'no-config.json') };
    const value = secretValue();
    const r = await runToEnd(process.execPath, [
      ESSH, 'ssh', tenant.app, '-e', `KEY=${value}`, '-e', 'APP_ENV=from-the-cli', '-e', 'WITH_EQUALS=a=b', '-e', 'EMPTY=', '--',
      'sh', '-c', 'echo "$KEY"; echo "$APP_ENV $WITH_EQUALS [${EMPTY-unset}] $DATABASE_URL"',
    ], { env, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe(`${value}\nfrom-the-cli a=b [] postgres://app@db/app\n`);
    const id = Number(/session (\d+)/.exec(r.stderr)![1]);
    expect((await stack.api.get(`/sessions/${id}`, tenant.token)).body).toMatchObject({ state: expect.any(String), command: ['sh', '-c', expect.any(String)] });
    expect(JSON.stringify((await stack.api.get(`/sessions/${id}`, tenant.token)).body)).not.toContain(value);

    const malformed = await runToEnd(process.execPath, [ESSH, 'ssh', tenant.app, '-e', 'NOEQUALS', '--', 'true'], { env, timeoutMs: 30_000 });
    expect(malformed.code).toBe(255);
    expect(malformed.stderr.split('\n')[0]).toBe(
      "error: option '-e, --env <KEY=VALUE>' argument 'NOEQUALS' is invalid. -e takes KEY=VALUE, e.g. -e LOG_LEVEL=debug (for an empty value: -e KEY=).",
    );
    // A name the API refuses: its sentence, on one line, naming the variable.
    const badName = await runToEnd(process.execPath, [ESSH, 'ssh', tenant.app, '-e', `9LIVES=${value}`, '--', 'true'], { env, timeoutMs: 30_000 });
    expect(badName.code).toBe(255);
    expect(badName.stderr).toMatch(/^essh: Invalid request: body\.env\.9LIVES: environment variable names are letters[^\n]*\n$/);
    expect(badName.stderr).not.toContain(value);
  }, 120_000);

  it('a key rotation seals the env of sessions not yet ended under the new key at start-up', async () => {
    const value = secretValue();
    const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { env: { ROTATED: value } });
    expect(r.status).toBe(201);
    const before = (await stack.runtime.db.selectFrom('operations').select('env').where('id', '=', r.body.id).executeTakeFirstOrThrow()).env!;
    const oldKey = Buffer.from((await readFile(path.join(stack.dataDir, 'secrets.key'), 'utf8')).trim(), 'base64');
    const newKey = randomBytes(32);
    const rotating = new SecretBox(newKey, [oldKey]);
    const resealed = await sealStoredEnvs(stack.runtime.db, rotating);
    expect(resealed.sessions).toBeGreaterThanOrEqual(1);
    const after = (await stack.runtime.db.selectFrom('operations').select('env').where('id', '=', r.body.id).executeTakeFirstOrThrow()).env!;
    expect(after).toMatch(new RegExp(`^v2\\.${rotating.keyId}\\.`));
    expect(rotating.open(after)).toBe(rotating.open(before));
    expect(after).not.toContain(value);
    // Idempotent; and put back under the stack's key, so that the rest of the file's sessions open.
    expect((await sealStoredEnvs(stack.runtime.db, rotating)).sessions).toBe(0);
    await sealStoredEnvs(stack.runtime.db, new SecretBox(oldKey, [newKey]));
    await stack.api.post(`/sessions/${r.body.id}/terminate`, tenant.token, {});
    await waitForState(stack, tenant.token, r.body.id, 'ended', 60_000);
  }, 90_000);
});
