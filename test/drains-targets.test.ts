// Tenant isolation of drains: private, loopback, link-local, CGNAT and metadata targets are refused
// at creation and again at connect time (with ESSH_DRAINS_ALLOW_PRIVATE off, as in production), and a
// drain URL's credentials are never shown back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSecretBox } from '../lib/secrets.js';
import { displayUrl, forbiddenAddressReason } from '../drains/targets.js';
import { createTenant, sleep, useTestStack, waitFor } from './support/harness.js';
import { useHttpsReceiver } from './support/drains-receivers.js';
import { TestHost, type Tenant } from './support/drains-journals.js';

const stack = useTestStack({ parts: { api: true }, env: { ESSH_DRAINS_ALLOW_PRIVATE: '0' } });
const rx = useHttpsReceiver();
let host: TestHost;
let tenant: Tenant;

beforeAll(async () => {
  host = await TestHost.create(stack);
  tenant = await createTenant(stack, { plan: 'scale' }) as Tenant;
  await host.startShipper({ allowPrivateTargets: false });
});
afterAll(async () => {
  await host?.stop();
});

describe('drain targets', () => {
  it.each([
    ['https', 'https://127.0.0.1:8443/in', /127\.0\.0\.1 is a loopback address: drains may only send to public addresses/],
    ['https', 'https://localhost/in', /localhost \((127\.0\.0\.1|::1)\) is a loopback address/],
    ['https', 'https://[::1]/in', /::1 is a loopback address/],
    ['https', 'https://[::ffff:127.0.0.1]/in', /loopback/],
    ['https', 'https://10.1.2.3/in', /private address \(RFC 1918\)/],
    ['https', 'https://172.20.0.5/in', /private address/],
    ['https', 'https://192.168.1.10/in', /private address/],
    ['https', 'https://100.64.0.7/in', /carrier-grade NAT/],
    ['https', 'https://169.254.169.254/latest/meta-data', /cloud metadata address/],
    ['https', 'https://169.254.10.10/in', /link-local/],
    ['https', 'https://[fd00:ec2::254]/in', /cloud metadata address/],
    ['https', 'https://[fd12:3456::1]/in', /unique local/],
    ['https', 'https://[fe80::1]/in', /link-local/],
    ['https', 'https://0.0.0.0/in', /unspecified/],
    ['https', 'https://[64:ff9b::a00:1]/in', /private address.*inside/],
    // Ranges the hand-written list had missed, now from ipaddr.js's special-purpose registry.
    ['https', 'https://[64:ff9b:1::a00:1]/in', /64:ff9b:1::a00:1 is a local-use NAT64 address/],
    ['https', 'https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/in', /Teredo tunnel address/],
    ['https', 'https://192.0.0.170/in', /192\.0\.0\.170 is a reserved address/],
    ['https', 'https://198.18.0.1/in', /198\.18\.0\.1 is a reserved address/],
    ['https', 'https://198.19.255.254/in', /reserved address/],
    ['https', 'https://[::7f00:1]/in', /IPv4-compatible address/],
    ['https', 'https://[2002:a00:1::1]/in', /private address.*inside/],
    ['syslog', 'syslog+tls://192.168.0.1:6514', /private address/],
    ['elasticsearch', 'https://127.0.0.2:9200', /loopback/],
    ['https', 'https://no-such-host.invalid/in', /does not resolve/],
  ])('refuses a %s drain to %s at creation', async (type, url, message) => {
    const r = await stack.api.post(`/accounts/${tenant.account}/log_drains`, stack.adminToken, {
      handle: `t-${Math.random().toString(36).slice(2, 8)}`, drain_type: type, url, ...(type === 'elasticsearch' ? { index: 'essh' } : {}),
    });
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.body.message).toMatch(message);
    expect(r.body.message).toMatch(/ESSH_DRAINS_ALLOW_PRIVATE|does not resolve/);
  });

  it('classifies public addresses as allowed', () => {
    for (const a of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '100.128.0.1', '172.32.0.1', '64:ff9b::808:808', '2002:808:808::1', '198.20.0.1']) expect(forbiddenAddressReason(a), a).toBeNull();
  });

  it('refuses at connect time a drain whose address became private after creation (DNS changed), pausing it, and sends nothing', async () => {
    // Created while the names resolved elsewhere: rows as the API would have written them.
    const secrets = await loadSecretBox({ dataDir: stack.dataDir });
    const { db } = stack.runtime;
    const acc = await db.selectFrom('accounts').select('id').where('handle', '=', tenant.account).executeTakeFirstOrThrow();
    const ids: number[] = [];
    for (const [handle, url] of [['by-ip', `${rx.url}/by-ip`], ['by-name', `https://localhost:${rx.port}/by-name`]] as const) {
      const row = await db.insertInto('log_drains').values({
        account_id: Number(acc.id), handle, drain_type: 'https', url: secrets.seal(url), token: null, ca_cert: rx.cert.cert,
        index_pattern: null, pipeline: null, drain_ephemeral_sessions: 1, delivered_events: 0, failed_events: 0,
        paused_reason: null, paused_at: null, last_success_at: null, last_error_at: null, last_error: null,
        last_error_status: null, last_error_detail: null, created_at: new Date(Date.now() - 1000).toISOString(),
      }).returning('id').executeTakeFirstOrThrow();
      ids.push(Number(row.id));
    }
    const s = await host.session(tenant);
    s.print('must not leave\n');
    await s.end();
    for (const id of ids) {
      const d = await waitFor(`drain ${id} to pause`, async () => {
        const x = (await stack.api.get(`/log_drains/${id}`, tenant.token)).body;
        return x.status === 'paused' ? x : undefined;
      }, 10_000, 200);
      expect(d.paused_reason).toMatch(/refused: .*(127\.0\.0\.1|::1).* is a loopback address/);
      expect(d.delivery.backlog_sessions).toBe(1); // kept, not dropped
    }
    await sleep(500);
    expect(rx.requests).toEqual([]);
  });

  it('shows drain URLs with user names, passwords, query values and secret-looking path segments masked', async () => {
    expect(displayUrl('https://user:pw@hooks.example.com/services/T0123ABCD/B0123ABCD/abcdefGHIJ0123456789xyzw'))
      .toBe('https://****:****@hooks.example.com/services/T0123ABCD/B0123ABCD/****');
    expect(displayUrl('https://SECRETKEY@logs.example.com/in')).toBe('https://****@logs.example.com/in');
    expect(displayUrl('https://logs.example.com/ingest?token=s3cr3t&api_key=abc&source=essh'))
      .toBe('https://logs.example.com/ingest?token=****&api_key=****&source=****');
    expect(displayUrl('https://logs.example.com/v1/input/3f2b9c1e-8d7a-4b6c-9e5f-0a1b2c3d4e5f'))
      .toBe('https://logs.example.com/v1/input/****');
    expect(displayUrl('https://logs.example.com/api/v2/ingest-production-logs')).toBe('https://logs.example.com/api/v2/ingest-production-logs');
  });
});
