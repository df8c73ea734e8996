// Recordings built from a session's journal, served by the API from the host's internal endpoint (or
// read in-process), and the hosts' retention of journals.
import { execFile } from 'node:child_process';
import https from 'node:https';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nowIso } from '../lib/db.js';
import { createLogger } from '../lib/log.js';
import { loadSecretBox } from '../lib/secrets.js';
import { principalForUser } from '../services/auth.js';
import { journalPath } from '../journal/writer.js';
import { HostInternalServer } from '../recordings/internal-server.js';
import { INTERNAL_TOKEN_TTL_MS, internalRecordingToken } from '../recordings/internal-auth.js';
import { HostRegistration } from '../host/registry.js';
import { JournalRetention } from '../drains/retention.js';
import { RecordingsService } from '../recordings/service.js';
import { createTenant, sleep, useTestStack, waitFor } from './support/harness.js';
import { expectRecordingOnlyForItsPeople } from './support/recordings.js';
import { HttpsReceiver, eventsOf, selfSignedCert, type Cert } from './support/drains-receivers.js';
import { TestHost, type Tenant } from './support/drains-journals.js';

const run = promisify(execFile);
const RETENTION_S = 2;
const stack = useTestStack(async () => {
  // The host's internal endpoint speaks HTTPS with a certificate the API's process trusts by its CA file.
  cert = await selfSignedCert();
  return { parts: { api: true }, env: { ESSH_EVENT_RETENTION_S: String(RETENTION_S), ESSH_HOST_INTERNAL_TLS_CA: cert.certPath } };
});
let host: TestHost;
let internal: HostInternalServer;
let registration: HostRegistration;
let tenant: Tenant;
let dir: string;
let cert: Cert;

beforeAll(async () => {
  host = await TestHost.create(stack);
  const log = createLogger('warn');
  internal = new HostInternalServer({
    db: stack.runtime.db, log, secrets: await loadSecretBox({ dataDir: stack.dataDir }), hostId: host.hostId, dataDir: host.dataDir,
    retentionS: RETENTION_S, listen: { host: '127.0.0.1', port: 0 }, tls: { cert: cert.cert, key: cert.key },
  });
  const url = await internal.start();
  registration = new HostRegistration({ db: stack.runtime.db, log, intervalS: 60 }, { hostId: host.hostId, stacks: ['local'], dataDir: host.dataDir });
  await registration.start();
  await registration.update({ internalUrl: url });
  tenant = await createTenant(stack, { plan: 'scale' }) as Tenant;
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-recording-'));
});
afterAll(async () => {
  await registration?.stop();
  await internal?.stop();
  await host?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (cert) await rm(cert.dir, { recursive: true, force: true });
});

async function recordedSession() {
  const s = await host.session(tenant);
  s.resize(100, 30);
  s.print('$ ');
  await sleep(700); // a prompt on its own, then a pause in the timings
  s.print('printf "\\033[1;32mgreen\\033[0m Ünïcødé ✓\\n"\r\n');
  s.print(Buffer.concat([Buffer.from('\u001b[1;32mgreen\u001b[0m Ünïc'), Buffer.from([0xc3])]));
  s.print(Buffer.concat([Buffer.from([0xb8]), Buffer.from('dé ✓\r\n')])); // ø split across two chunks
  s.resize(120, 40);
  s.print('card 4111 1111 1111 1111\r\n$ ');
  return s;
}

describe('a recording from the journal', () => {
  it('is served by the API from the session\'s host: asciicast v2 with the starting size, resizes, redacted output, in order', async () => {
    expect((await stack.api.post(`/accounts/${tenant.account}/redaction_rules`, stack.adminToken, { name: 'cards', preset: 'card_number' })).status).toBe(201);
    const s = await recordedSession();
    // While it runs, and after it ended.
    const live = await fetch(`${stack.url}/sessions/${s.id}/recording`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(live.status).toBe(200);
    expect(await live.text()).toContain('green');
    await s.end();
    const rec = await fetch(`${stack.url}/sessions/${s.id}/recording`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(rec.status).toBe(200);
    expect(rec.headers.get('content-type')).toMatch(/^application\/x-asciicast/);
    const cast = await rec.text();
    const [headerLine, ...frames] = cast.trimEnd().split('\n');
    expect(JSON.parse(headerLine!)).toMatchObject({ version: 2, width: 100, height: 30, title: `essh session ${s.id} on ${tenant.app}` });
    const events = frames.map((f) => JSON.parse(f) as [number, string, string]);
    const times = events.map((e) => e[0]);
    for (let i = 1; i < times.length; i++) expect(times[i]!).toBeGreaterThanOrEqual(times[i - 1]!);
    expect(times[times.length - 1]! - times[0]!).toBeGreaterThan(0.5);
    expect(events.filter((e) => e[1] === 'r').map((e) => e[2])).toEqual(['120x40']);
    const shown = events.filter((e) => e[1] === 'o').map((e) => e[2]).join('');
    expect(shown).toBe('$ printf "\\033[1;32mgreen\\033[0m Ünïcødé ✓\\n"\r\n\u001b[1;32mgreen\u001b[0m Ünïcødé ✓\r\ncard [REDACTED CARD]\r\n$ ');
    expect(cast).not.toContain('4111');

    if (existsSync('/usr/bin/asciinema')) {
      const file = path.join(dir, `${s.id}.cast`);
      await writeFile(file, cast);
      // `asciinema cat` wants a controlling terminal: `script` gives it one; its stdout goes to a file.
      const played = path.join(dir, `${s.id}.out`);
      await run('script', ['-qec', `asciinema cat ${file} > ${played}`, '/dev/null'], { env: { ...process.env, LANG: 'C.UTF-8' } });
      expect(await readFile(played, 'utf8')).toContain('\u001b[1;32mgreen\u001b[0m Ünïcødé ✓');
    }
  });

  it('is the same when the API runs in the host\'s own process (read directly)', async () => {
    const s = await recordedSession();
    await s.end();
    const recordings = new RecordingsService({
      db: stack.runtime.db, secrets: await loadSecretBox({ dataDir: stack.dataDir }), retentionS: RETENTION_S,
      localHost: { hostId: host.hostId, dataDir: host.dataDir },
    });
    const principal = (await principalForUser(stack.runtime.db, tenant.user.id))!;
    let local = '';
    for await (const chunk of await recordings.recording(principal, s.id)) local += String(chunk);
    const remote = await (await fetch(`${stack.url}/sessions/${s.id}/recording`, { headers: { authorization: `Bearer ${tenant.token}` } })).text();
    expect(local).toBe(remote);
  });

  it('is served to the owner, account admins and operators only', async () => {
    const s = await host.session(tenant);
    s.print('private-output\n');
    await s.end();
    await expectRecordingOnlyForItsPeople(stack, tenant, s.id);
  });

  it('is served by the host\'s internal endpoint over HTTPS only with a short-lived token made for that session, and answers 503 while its host is unreachable', async () => {
    const s = await host.session(tenant);
    s.print('x\n');
    const other = await host.session(tenant);
    other.print('y\n');
    expect(internal.url).toMatch(/^https:\/\//);
    const url = (id: number) => `${internal.url}/internal/v1/sessions/${id}/recording`;
    // Node's https with the test CA: what the API's process does, without its token.
    const get = (target: string, bearer?: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      https.get(target, { ca: cert.cert, headers: bearer ? { authorization: `Bearer ${bearer}` } : {} }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).once('end', () => resolve({ status: res.statusCode!, body }));
      }).once('error', reject);
    });
    const secrets = await loadSecretBox({ dataDir: stack.dataDir });
    const refused = async (bearer: string | undefined, why: RegExp) => {
      const r = await get(url(s.id), bearer);
      expect(r.status, r.body).toBe(401);
      expect(JSON.parse(r.body).message).toMatch(why);
    };
    await refused(undefined, /no bearer token/);
    await refused('nope', /not an internal request token/);
    // The permanent bearer every process used to derive from the secrets key opens nothing any more.
    await refused(secrets.derive('essh host internal endpoint v1')[0]!, /not an internal request token/);
    await refused(internalRecordingToken(secrets, other.id), new RegExp(`it is for session ${other.id}`));
    await refused(internalRecordingToken(secrets, s.id, Date.now() - INTERNAL_TOKEN_TTL_MS - 1000), /expired/);
    await refused(internalRecordingToken(secrets, s.id, Date.now() + 24 * 3600_000), /longer life/);
    const forged = internalRecordingToken(secrets, s.id).replace(/\.[^.]+$/, `.${'A'.repeat(43)}`);
    await refused(forged, /signature does not match/);
    const ok = await get(url(s.id), internalRecordingToken(secrets, s.id));
    expect(ok.status, ok.body).toBe(200);
    expect(ok.body).toContain('x');
    expect((await get(`${internal.url}/internal/v1/anything-else`, internalRecordingToken(secrets, s.id))).status).toBe(404);
    // Plain HTTP to the HTTPS endpoint is no way around it.
    await expect(fetch(url(s.id).replace('https:', 'http:'), { headers: { authorization: `Bearer ${internalRecordingToken(secrets, s.id)}` } })
      .then((r) => r.status)).rejects.toThrow();
    await other.end();
    await stack.runtime.db.updateTable('hosts').set({ internal_url: 'http://127.0.0.1:9' }).where('host_id', '=', host.hostId).execute();
    try {
      const r = await stack.api.get(`/sessions/${s.id}/recording`, tenant.token);
      expect(r.status).toBe(503);
      expect(r.body.message).toMatch(new RegExp(`on host ${host.hostId}, which does not answer`));
    } finally {
      await registration.update({ internalUrl: internal.url });
    }
    await s.end();
  });

  it('of a session from before journals is gone (410), and of one not started yet is empty', async () => {
    const { db } = stack.runtime;
    const acc = await db.selectFrom('accounts').select('id').where('handle', '=', tenant.account).executeTakeFirstOrThrow();
    const app = await db.selectFrom('apps').select('id').where('handle', '=', tenant.app).executeTakeFirstOrThrow();
    const row = (state: string) => ({
      type: 'execute', account_id: Number(acc.id), app_id: Number(app.id), user_id: tenant.user.id, stack: 'local', command: null,
      container_size_mb: 1024, state, status: state === 'ended' ? 'succeeded' : 'running', end_reason: null, end_message: null, ended_by: null,
      exit_code: null, container_id: null, workflow_id: null, created_at: nowIso(), updated_at: nowIso(), connected_at: null,
      ended_at: state === 'ended' ? nowIso() : null, expires_at: null,
    });
    const old = await db.insertInto('operations').values(row('ended')).returning('id').executeTakeFirstOrThrow();
    const r = await stack.api.get(`/sessions/${old.id}/recording`, tenant.token);
    expect(r.status).toBe(410);
    expect(r.body.message).toMatch(/no recording.*before session output moved to journals/);
    const fresh = await db.insertInto('operations').values(row('provisioning')).returning('id').executeTakeFirstOrThrow();
    const e = await stack.api.get(`/sessions/${fresh.id}/recording`, tenant.token);
    expect(e.status).toBe(200);
    expect(String(e.body).trim().split('\n')).toHaveLength(1);
  });
});

describe('retention of journals on their host', () => {
  it('deletes an ended session\'s journal after the retention, then its recording answers 410; keeps what a drain has not delivered', async () => {
    const cert: Cert = await selfSignedCert();
    const rx = new HttpsReceiver(cert);
    await rx.up();
    const retention = new JournalRetention({
      db: stack.runtime.db, log: createLogger('warn'), hostId: host.hostId, dataDir: host.dataDir, retentionS: RETENTION_S, intervalS: 3600,
    });
    try {
      const undrained = await host.session(tenant);
      undrained.print('kept-for-a-while\n');
      await undrained.end();
      const drainedTenant = await createTenant(stack, { plan: 'scale' }) as Tenant;
      rx.answer = () => ({ status: 503, body: '{}' });
      const d = await stack.api.post(`/accounts/${drainedTenant.account}/log_drains`, stack.adminToken, {
        handle: 'slow', drain_type: 'https', url: `${rx.url}/in`, ca_cert: cert.cert,
      });
      expect(d.status).toBe(201);
      await host.startShipper();
      const drained = await host.session(drainedTenant);
      drained.print('waits-for-the-drain\n');
      await drained.end();

      expect((await stack.api.get(`/sessions/${undrained.id}/recording`, tenant.token)).status).toBe(200);
      await retention.runOnce(); // sessions of the tests before may be past it already: not these
      expect(existsSync(journalPath(host.dataDir, undrained.id))).toBe(true);
      await sleep((RETENTION_S + 1) * 1000);
      await retention.runOnce();
      expect(existsSync(journalPath(host.dataDir, undrained.id))).toBe(false);
      const gone = await stack.api.get(`/sessions/${undrained.id}/recording`, tenant.token);
      expect(gone.status).toBe(410);
      expect(gone.body).toMatchObject({ error: 'gone' });
      expect(gone.body.message).toMatch(new RegExp(`recording of session ${undrained.id} was deleted.*kept for ${RETENTION_S} s.*ESSH_EVENT_RETENTION_S`));
      // The drain that has not received its session keeps it, well past the retention.
      expect(existsSync(journalPath(host.dataDir, drained.id))).toBe(true);
      rx.answer = () => ({ status: 200, body: '{}' });
      await waitFor('the drain to receive the session', async () =>
        eventsOf(rx).some((e) => e.operation_id === drained.id && e.event === 'session_ended'), 20_000, 200);
      expect(eventsOf(rx).some((e) => e.log === 'waits-for-the-drain')).toBe(true);
      await waitFor('the delivered journal to be deleted', async () => {
        await retention.runOnce();
        return !existsSync(journalPath(host.dataDir, drained.id));
      }, 10_000, 300);
      const row = await stack.runtime.db.selectFrom('session_journals').select('deleted_at').where('operation_id', '=', drained.id).executeTakeFirstOrThrow();
      expect(row.deleted_at).toBeTruthy();
    } finally {
      await host.stopShippers();
      await rx.down();
      await rm(cert.dir, { recursive: true, force: true });
    }
  });
});
