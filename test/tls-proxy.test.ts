// TLS in front of the API: Debian's nginx runs deploy/nginx/essh-api.conf itself (only its certificate,
// ports and upstream swapped for the test's), with a certificate from a throwaway CA, in front of a real
// stack; the real `essh` CLI logs in and runs sessions through it, trusting the CA by NODE_EXTRA_CA_CERTS.
// The CLI runs as the README puts it on PATH, bin/essh, which hands NODE_EXTRA_CA_CERTS to the CLI
// instead of node (a faster start, see there): the CLI adds the CA itself on its first HTTPS request.
import https from 'node:https';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { freeLoopbackPort } from '../lib/free-port.js';
import { createTenant, useTestStack } from './support/harness.js';
import { makeCertificates, request, startNginx, type Nginx } from './support/nginx.js';
import { runToEnd } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh');
const stack = useTestStack({ env: { ESSH_TRUST_PROXY: '127.0.0.1' } });
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let nginx: Nginx | undefined;
let apiUrl: string;
let port: number;
const caFile = () => path.join(dir, 'ca.pem');
let caCert: string;
/** A request; https ones trust the test CA unless told otherwise. */
const get = (url: string, opts: https.RequestOptions & { body?: string } = {}) =>
  request(url, { ca: url.startsWith('https:') ? opts.ca ?? caCert : undefined, ...opts });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-tls-proxy-'));
  // nginx reaches the API from 127.0.0.1; clients below come from other loopback addresses (127.0.0.2…),
  // so that the address the audit trail records says whose word it took.
  tenant = await createTenant(stack, { plan: 'scale' });
  await makeCertificates(dir);
  caCert = await readFile(caFile(), 'utf8');
  port = await freeLoopbackPort();
  nginx = await startNginx(dir, { port, apiPorts: [Number(new URL(stack.url).port)], ca: caFile() });
  apiUrl = nginx.url;
});
afterAll(async () => {
  await nginx?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The CLI with its own config file, trusting the test CA unless told otherwise. */
const essh = (args: string[], opts: { input?: string; trustCa?: boolean; env?: Record<string, string> } = {}) => {
  // NODE_OPTIONS emptied: with it set, bin/essh leaves NODE_EXTRA_CA_CERTS to node, as before.
  const env: NodeJS.ProcessEnv = { ...process.env, ESSH_CONFIG: path.join(dir, 'cli', 'essh.json'), NODE_OPTIONS: '', ...opts.env };
  delete env.ESSH_API_URL;
  delete env.ESSH_TOKEN;
  delete env.NODE_EXTRA_CA_CERTS;
  if (opts.trustCa !== false) env.NODE_EXTRA_CA_CERTS = caFile();
  Object.assign(env, opts.env);
  return runToEnd(ESSH, args, { input: opts.input, env, timeoutMs: 90_000 });
};
const proxied = async (line: RegExp) => (await nginx!.accessLog()).split('\n').some((l) => line.test(l));

describe('the API behind nginx with TLS (deploy/nginx/essh-api.conf)', () => {
  it('the CLI logs in through the proxy and runs a session to its end', async () => {
    const login = await essh(['login', '--api', apiUrl, '--token-stdin'], { input: `${tenant.token}\n` });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stderr).toMatch(new RegExp(`^Logged in to ${apiUrl} as ${tenant.user.name} `));

    const r = await essh(['ssh', tenant.app, '--', 'sh', '-c', 'echo through-tls; exit 3']);
    expect(r.stdout.toString(), r.stderr).toBe('through-tls\n');
    expect(r.code, r.stderr).toBe(3);
    expect(await proxied(new RegExp(`"POST /apps/${tenant.app}/sessions HTTP/1.1" 201 `))).toBe(true);
  });

  it('a detached job runs and its recording is followed to its exit code, all through the proxy', async () => {
    const started = await essh(['run', '--detach', tenant.app, '--', 'sh', '-c', 'echo job-through-tls; exit 4']);
    expect(started.code, started.stderr).toBe(0);
    const id = started.stdout.toString().trim();
    expect(id).toMatch(/^\d+$/);
    const logs = await essh(['logs', '-f', id, '--interval', '0.5']);
    expect(logs.stdout.toString()).toContain('job-through-tls\n');
    expect(logs.code, logs.stderr).toBe(4);
    expect(await proxied(new RegExp(`"GET /sessions/${id}/recording[^"]* HTTP/1.1" 200 `))).toBe(true);
  });

  // nginx sends the leaf alone (no chain), so OpenSSL's word is "unable to verify the first certificate".
  it('without the CA the CLI refuses the certificate and says how to trust it', async () => {
    const r = await essh(['whoami'], { trustCa: false });
    expect(r.code).toBe(1);
    // One line; in the parentheses OpenSSL's reason, to which Node 24 adds a hint of its own (--use-system-ca).
    const [line, ...rest] = r.stderr.split('\n');
    expect(rest).toEqual(['']);
    expect(line!.startsWith(`essh: the essh API at ${apiUrl} presented a TLS certificate this machine does not trust (unable to verify the first certificate`)).toBe(true);
    expect(line!.endsWith('); if your organisation signs it with its own CA, point NODE_EXTRA_CA_CERTS at that CA\'s PEM file')).toBe(true);
  });

  it('a NODE_EXTRA_CA_CERTS file that cannot be read is warned about, as node does, and the certificate refused', async () => {
    const missing = path.join(dir, 'no-such-ca.pem');
    const r = await essh(['whoami'], { trustCa: false, env: { NODE_EXTRA_CA_CERTS: missing } });
    expect(r.code).toBe(1);
    const [warning, refusal, ...rest] = r.stderr.split('\n');
    expect(rest).toEqual(['']);
    expect(warning).toMatch(new RegExp(`^essh: warning: ignoring the extra CA certificates of NODE_EXTRA_CA_CERTS \\(${missing}\\): .*ENOENT`));
    expect(refusal).toMatch(/presented a TLS certificate this machine does not trust/);
  });

  it('sends HSTS, and lets the API answer a body over its 64 KB limit with its own sentence', async () => {
    const ok = await get(`${apiUrl}/me`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(ok.status).toBe(200);
    expect(ok.headers['strict-transport-security']).toBe('max-age=63072000');
    const big = await get(`${apiUrl}/apps/${tenant.app}/sessions`, {
      method: 'POST', headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ env: { BIG: 'x'.repeat(100_000) } }),
    });
    expect(big.status).toBe(413);
    expect(JSON.parse(big.body).message).toBe('The request body is larger than 64 KB; send less.');
    expect(big.headers['strict-transport-security']).toBe('max-age=63072000');
  });

  it('with ESSH_TRUST_PROXY naming the proxy, the audit trail records the client nginx saw, and no other caller picks its address', async () => {
    const since = new Date().toISOString();
    const patch = (base: string, localAddress: string, key: string) => get(`${base}/apps/${tenant.app}`, {
      method: 'PATCH', localAddress, body: JSON.stringify({ env: { [key]: '1' } }),
      headers: { authorization: `Bearer ${stack.adminToken}`, 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9' },
    });
    expect((await patch(apiUrl, '127.0.0.2', 'VIA_PROXY')).status).toBe(200);
    expect((await patch(stack.url, '127.0.0.3', 'STRAIGHT_TO_API')).status).toBe(200);
    const events = await stack.api.listAll(`/audit_events?since=${encodeURIComponent(since)}`, stack.adminToken);
    const sourceOf = (key: string) => events.find((e) => e.action === 'app.updated' && e.details?.env?.added?.includes(key))?.source_address;
    // Through the proxy: the client's own X-Forwarded-For is replaced by nginx with the peer it saw.
    expect(sourceOf('VIA_PROXY')).toBe('127.0.0.2');
    // Not from a listed proxy: its X-Forwarded-For is not believed.
    expect(sourceOf('STRAIGHT_TO_API')).toBe('127.0.0.3');
  });

  it('refuses plain http on its port and TLS older than 1.2', async () => {
    const plain = await get(`http://127.0.0.1:${port}/me`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(plain.status).toBe(400);
    expect(plain.body).toContain('The plain HTTP request was sent to HTTPS port');

    // SECLEVEL=0 lets this client offer TLS 1.1 at all, so that the refusal is the proxy's.
    const hello = (version: string) => runToEnd('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, `-${version}`,
      '-cipher', 'DEFAULT@SECLEVEL=0', '-CAfile', caFile(), '-verify_return_error'], { timeoutMs: 20_000 });
    const old = await hello('tls1_1');
    expect(old.code).not.toBe(0);
    expect(old.stdout.toString() + old.stderr).toMatch(/alert protocol version/);
    for (const v of ['tls1_2', 'tls1_3']) {
      const fine = await hello(v);
      expect(fine.code, `${v}: ${fine.stderr}`).toBe(0);
      expect(fine.stdout.toString()).toMatch(/Verify return code: 0 \(ok\)/);
    }
  });
});
