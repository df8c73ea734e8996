import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, runInSession, useTestStack, waitFor } from './support/harness.js';
import { selfSignedCert, type Cert } from './support/drains-receivers.js';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';

// Debian's rsyslogd (with rsyslog-gnutls) as the receiver: RFC 5425 TLS input, RFC 6587 octet-counted
// framing, its default 8 KiB maximum message size, and every message written as rsyslog's own JSON.
const stack = useTestStack();
let cert: Cert;
let rsyslog: ChildProcess;
let port: number;
let outFile: string;

beforeAll(async () => {
  cert = await selfSignedCert();
  port = await freePort();
  outFile = path.join(cert.dir, 'received.jsonl');
  const conf = path.join(cert.dir, 'rsyslog.conf');
  await writeFile(conf, `
global(workDirectory="${cert.dir}"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="${cert.certPath}"
  DefaultNetstreamDriverCertFile="${cert.certPath}"
  DefaultNetstreamDriverKeyFile="${cert.keyPath}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="${port}")
template(name="asJson" type="list") { property(name="jsonmesg") constant(value="\\n") }
*.* action(type="omfile" file="${outFile}" template="asJson")
`);
  rsyslog = spawn('rsyslogd', ['-n', '-f', conf, '-i', path.join(cert.dir, 'rsyslogd.pid')], { stdio: ['ignore', 'inherit', 'inherit'] });
  await waitFor('rsyslogd to listen', () => new Promise<boolean>((resolve) => {
    // A TLS handshake closed with close_notify, so that rsyslogd has nothing to complain about.
    const s = tls.connect({ port, host: '127.0.0.1', ca: cert.cert, servername: 'localhost' }, () => { s.end(); resolve(true); })
      .once('error', () => resolve(false));
  }), 15_000, 200);
});
afterAll(async () => {
  if (rsyslog?.pid) rsyslog.kill('SIGTERM');
  if (cert) await rm(cert.dir, { recursive: true, force: true });
});

async function received(): Promise<Record<string, any>[]> {
  const text = await readFile(outFile, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('a syslog drain (TLS) into rsyslog', () => {
  it('delivers RFC 5424 messages with the operation metadata, multibyte text intact, long lines split below 8 KiB', async () => {
    const tenant = await createTenant(stack, { plan: 'scale' });
    const admin = stack.adminToken;
    // A user name that needs SD-PARAM escaping.
    const u = await stack.api.post('/users', admin, { name: 'Jo "JJ" O]Neil \\ ops', email: `jo-${tenant.account}@example.com`, role: 'member', accounts: [tenant.account] });
    expect(u.status, JSON.stringify(u.body)).toBe(201);
    const d = await stack.api.post(`/accounts/${tenant.account}/log_drains`, admin, {
      handle: 'rsyslog', drain_type: 'syslog', url: `syslog+tls://localhost:${port}`, token: 'tok-1234', ca_cert: cert.cert,
    });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    expect(d.body).toMatchObject({ drain_type: 'syslog', has_token: true, has_ca_cert: true });

    // The user's session prints through the portal. 2048 × "ab€" = 10 240 bytes on one line, written
    // in pieces of 999 bytes that split characters (separate writes, so separate chunks and journal
    // records); the session ends with exit code 0.
    const script = `printf 'Grüße, 世界 🚀 done\\n'
      i=0; s=; while [ $i -lt 2048 ]; do s="\${s}ab€"; i=$((i+1)); done; printf 'LONG[%s]END\\n' "$s" > /tmp/long
      i=0; while [ $i -lt 11 ]; do dd if=/tmp/long bs=999 skip=$i count=1 2>/dev/null; sleep 0.05; i=$((i+1)); done; exit 0`;
    const run = await runInSession(stack, { app: tenant.app, token: u.body.token }, { command: ['sh', '-c', script] });
    expect(run.exitCode).toBe(0);
    const long = `LONG[${'ab€'.repeat(2048)}]END\n`;
    expect(run.stdout.toString()).toBe(`Grüße, 世界 🚀 done\n${long}`);
    const id = run.id;
    const pieces: Buffer[] = [];
    for await (const r of readRecords(journalPath(stack.dataDir, id))) if (r.type === RecordType.output) pieces.push(r.payload);
    expect(pieces.some((p) => !Buffer.from(p.toString('utf8')).equals(p)), 'a journal record ending inside a character').toBe(true);

    const msgs = await waitFor('the ended event in rsyslog', async () => {
      const all = (await received()).filter((m) => m.procid === String(id));
      return all.some((m) => m.msgid === 'session_ended') ? all : undefined;
    }, 30_000, 300);

    // No character was broken anywhere, and no message reached the receiver's 8 KiB limit (it would truncate).
    expect(msgs.filter((m) => String(m.msg).includes('\uFFFD'))).toEqual([]);

    for (const m of msgs) {
      expect(m['app-name']).toBe(tenant.app);
      expect(m.procid).toBe(String(id));
      expect(m.hostname).toBeTruthy();
      expect(['output', 'session_started', 'session_ended']).toContain(m.msgid);
      expect(m.msg.startsWith('tok-1234 ')).toBe(true);
      expect(m['structured-data']).toContain(
        `[essh@32473 operation_id="${id}" user_name="Jo \\"JJ\\" O\\]Neil \\\\ ops" user_email="jo-${tenant.account}@example.com"`,
      );
      expect(Buffer.byteLength(m.rawmsg ?? m.msg, 'utf8')).toBeLessThan(8000);
      expect(Number.isNaN(Date.parse(m.timereported))).toBe(false);
    }
    const text = (m: Record<string, any>) => (m.msg as string).replace(/^tok-1234 /, '');
    expect(msgs.map(text)).toContain('Grüße, 世界 🚀 done');
    expect(msgs.find((m) => m.msgid === 'session_started')!.msg).toMatch(/started by Jo "JJ" O\]Neil/);
    expect(msgs.find((m) => m.msgid === 'session_ended')!.msg).toMatch(/ended: exit, exit code 0/);

    // The long line arrives in parts, in order, that join back into exactly what was printed.
    const parts = msgs.filter((m) => / part="\d+\/\d+"/.test(m['structured-data']))
      .sort((a, b) => Number(/part="(\d+)/.exec(a['structured-data'])![1]) - Number(/part="(\d+)/.exec(b['structured-data'])![1]));
    expect(parts.length).toBeGreaterThanOrEqual(2);
    const joined = parts.map(text).join('');
    const expected = `LONG[${'ab€'.repeat(2048)}]END`;
    expect(Buffer.byteLength(joined)).toBe(Buffer.byteLength(expected));
    expect(joined === expected).toBe(true);
  });
});
