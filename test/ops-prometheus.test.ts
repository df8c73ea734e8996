import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, projectRoot } from '../lib/config.js';
import { createLogger } from '../lib/log.js';
import { startRuntime } from '../server/runtime.js';
import { createTenant, endAllSessions, runInSession, useTestStack, waitFor, waitForState } from './support/harness.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';

/**
 * What an operator deploys (deploy/prometheus, deploy/grafana) against a running essh: an API process
 * (this test's) and a main+host process (server/worker-main.ts), both serving /metrics behind the metrics
 * token, scraped by Debian's real prometheus with the repository's scrape config and alert rules
 * (checked and unit-tested by Debian's promtool). Prometheus's HTTP API then answers the sessions
 * gauge, a Temporal SDK metric, the host's figures, and every expression of the Grafana dashboard.
 */

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const run = promisify(execFile);

const token = randomBytes(24).toString('hex');
const stack = useTestStack({ parts: { api: true }, env: { ESSH_METRICS_TOKEN: token } });
let host: WorkerProcess;
let hostMetricsUrl: string;
let prometheus: ChildProcess | undefined;
let promOut = '';
let promUrl: string;
let dir: string;
let tenant: Awaited<ReturnType<typeof createTenant>>;
let appId: number;
let waiting: number;

async function query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
  return body.data.result;
}

beforeAll(async () => {
  for (const program of [PROMETHEUS, PROMTOOL]) {
    if (!existsSync(program)) throw new Error(`test/ops-prometheus.test.ts needs ${program}: \`bash scripts/setup.sh --for-tests\` installs Debian's prometheus (npm test runs it)`);
  }
  // The API in this process; the main worker and the stack host in another, as deployed.
  const hostPort = await freePort();
  host = await startWorkerProcess(stack, {
    ESSH_WORKER_ROLES: 'main,host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: `prom-host-${randomBytes(3).toString('hex')}`,
    ESSH_METRICS_PORT: String(hostPort), ESSH_METRICS_TOKEN: token, ESSH_DRAINS_ALLOW_PRIVATE: '1',
  });
  hostMetricsUrl = `http://127.0.0.1:${hostPort}/metrics`;

  // Something for every figure: a warm pool, a drain that cannot deliver, a session that ran, one
  // waiting for its client, and a refused creation.
  tenant = await createTenant(stack, { plan: 'scale' });
  const app = await stack.api.request('PATCH', `/apps/${tenant.app}`, stack.adminToken, { warm_pool: 1 });
  expect(app.status).toBe(200);
  appId = app.body.id;
  const drain = await stack.api.post(`/accounts/${tenant.account}/log_drains`, stack.adminToken, {
    handle: 'nowhere', drain_type: 'https', url: `https://127.0.0.1:${await freePort()}/ingest`,
  });
  expect(drain.status, JSON.stringify(drain.body)).toBe(201);
  const ran = await runInSession(stack, tenant, { command: ['sh', '-c', 'echo metrics-test; exit 0'] });
  expect(ran.ended.end_reason).toBe('exit');
  const created = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
  expect(created.status).toBe(201);
  waiting = created.body.id;
  await waitForState(stack, tenant.token, waiting, 'waiting_for_client', 60_000);
  expect((await stack.api.post('/apps/no-such-app/sessions', tenant.token, {})).status).toBe(404);

  // The repository's configuration, as an operator installs it: the token file and the targets filled in.
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-prometheus-'));
  await cp(path.join(projectRoot, 'deploy', 'prometheus'), dir, { recursive: true });
  await writeFile(path.join(dir, 'essh-metrics-token'), `${token}\n`, { mode: 0o600 });
  const hostPortOf = (url: string) => new URL(url).host;
  await writeFile(path.join(dir, 'targets', 'essh.yml'), [
    `- targets: ['${hostPortOf(stack.runtime.metricsUrl)}']`, '  labels:', '    roles: api',
    `- targets: ['${hostPortOf(hostMetricsUrl)}']`, '  labels:', '    roles: worker,host', '',
  ].join('\n'));
  // Seconds rather than the deployed 15 s, so the test need not wait for scrapes.
  const config = path.join(dir, 'prometheus.yml');
  await writeFile(config, (await readFile(config, 'utf8')).replace(/(scrape|evaluation)_interval: 15s/g, '$1_interval: 1s').replace('scrape_timeout: 10s', 'scrape_timeout: 1s'));

  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  prometheus = spawn(PROMETHEUS, [
    `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  prometheus.stdout!.on('data', (d) => (promOut += d));
  prometheus.stderr!.on('data', (d) => (promOut += d));
  await waitFor('prometheus to be ready', async () => (await fetch(`${promUrl}/-/ready`).catch(() => null))?.ok, 60_000, 250)
    .catch((err) => { throw new Error(`${(err as Error).message}\n${promOut}`); });
}, 240_000);

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus!.once('exit', r));
    prometheus.kill('SIGTERM');
    await exited;
  }
  if (stack) await endAllSessions(stack).catch(() => undefined);
  await host?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('the operators\' Prometheus set-up (deploy/prometheus)', () => {
  it('passes promtool: the config, the alert rules and their unit tests', async () => {
    const config = await run(PROMTOOL, ['check', 'config', path.join(dir, 'prometheus.yml')]);
    expect(config.stdout).toMatch(/SUCCESS/);
    const rules = await run(PROMTOOL, ['check', 'rules', path.join(projectRoot, 'deploy', 'prometheus', 'essh-rules.yml')]);
    expect(rules.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const tests = await run(PROMTOOL, ['test', 'rules', path.join(projectRoot, 'deploy', 'prometheus', 'essh-rules.test.yml')]);
    expect(tests.stdout).toMatch(/SUCCESS/);
  });

  it('scrapes the API and the host process with the metrics token; without it the listeners answer 401', async () => {
    for (const url of [stack.runtime.metricsUrl, hostMetricsUrl]) {
      expect((await fetch(url)).status, url).toBe(401);
      expect((await fetch(url, { headers: { authorization: 'Bearer not-the-token-at-all' } })).status, url).toBe(401);
    }
    // The API's public port serves them only to the same token.
    expect((await fetch(`${stack.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${stack.adminToken}` } })).status).toBe(401);
    const viaApi = await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(viaApi.status).toBe(200);
    expect(await viaApi.text()).toMatch(/^essh_sessions\{state="waiting_for_client"\} [1-9]/m);

    const targets = await waitFor('both targets up', async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string; labels: Record<string, string>; lastError: string }[] } };
      const t = body.data.activeTargets;
      return t.length === 2 && t.every((x) => x.health === 'up') ? t : undefined;
    }, 60_000, 500).catch(async (err) => {
      throw new Error(`${(err as Error).message}: ${await (await fetch(`${promUrl}/api/v1/targets`)).text()}`);
    });
    expect(targets.map((t) => t.labels.roles).sort()).toEqual(['api', 'worker,host']);
  });

  it('keeps /metrics off the public API port by default, and refuses a metrics listener beyond loopback without a token', async () => {
    // The defaults: no token; the listener on loopback serves Prometheus, the API's port serves nothing.
    const plain = await startRuntime({ ...stack.config, metrics: { ...stack.config.metrics, token: undefined } }, { api: true }, createLogger('silent'));
    try {
      const refused = await fetch(`${plain.apiUrl}/metrics`);
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { message: string }).message).toMatch(/ESSH_METRICS_HOST:ESSH_METRICS_PORT/);
      expect(new URL(plain.metricsUrl).hostname).toBe('127.0.0.1');
      expect((await fetch(plain.metricsUrl)).status).toBe(200);
    } finally {
      await plain.stop();
    }
    expect(() => loadConfig({ ESSH_METRICS_HOST: '0.0.0.0' })).toThrow(/ESSH_METRICS_HOST is 0\.0\.0\.0, which is not a loopback address: set ESSH_METRICS_TOKEN/);
    expect(loadConfig({ ESSH_METRICS_HOST: '0.0.0.0', ESSH_METRICS_TOKEN: token }).metrics).toMatchObject({ host: '0.0.0.0', port: 9470, token });
    expect(loadConfig({}).metrics).toMatchObject({ host: '127.0.0.1', port: 9470, token: undefined });
  });

  it('answers the sessions gauge, the Temporal SDK\'s metrics and the host\'s figures through its HTTP API', async () => {
    const value = async (expr: string) => {
      const r = await query(expr);
      return r.length ? Number(r[0]!.value[1]) : undefined;
    };
    await waitFor('the waiting session in essh_sessions', async () => ((await value(`essh_sessions{state="waiting_for_client"}`)) ?? 0) >= 1, 30_000, 500);
    // The SDK's own names (temporal_ prefix), from the worker process's runtime.
    await waitFor('Temporal SDK metrics', async () => (await query('temporal_num_pollers{task_queue="essh"}')).length > 0, 30_000, 500);
    expect((await query('temporal_request')).length).toBeGreaterThan(0);
    await waitFor('a workflow task latency', async () => (await query('temporal_workflow_task_execution_latency_count')).length > 0, 30_000, 500);

    await waitFor('the host\'s figures', async () => {
      const checks = await Promise.all([
        value(`essh_warm_pool_target{app_id="${appId}"}`).then((v) => v === 1),
        value(`essh_warm_pool_ready{app_id="${appId}"}`).then((v) => v === 1),
        value('essh_host_free_disk_bytes').then((v) => (v ?? 0) > 0),
        value('essh_host_min_free_disk_bytes').then((v) => v !== undefined),
        value('time() - essh_host_agent_last_pass_timestamp_seconds').then((v) => v !== undefined && v < 60),
        value('essh_journal_written_bytes_total{roles="worker,host"}').then((v) => (v ?? 0) > 0),
        value('sum(essh_host_sessions{state="running"})').then((v) => (v ?? 0) >= 1),
        value('sum(essh_portal_connections)').then((v) => v !== undefined),
        value('sum(essh_portal_refused_connections_total)').then((v) => v !== undefined),
        value('essh_portal_reattach_waiting').then((v) => v === 0),
        value('essh_sessions_ended_total{end_reason="exit"}').then((v) => (v ?? 0) >= 1),
        value('sum(essh_sessions_created_total)').then((v) => (v ?? 0) >= 2),
        value('essh_session_create_rejected_total{reason="not_found"}').then((v) => (v ?? 0) >= 1),
        value('sum(essh_http_request_duration_seconds_count{route="/apps/{app}/sessions"})').then((v) => (v ?? 0) >= 2),
        value('max(essh_host_last_seen_timestamp_seconds)').then((v) => v !== undefined),
        value('max(essh_drain_paused)').then((v) => v === 0),
        // Node's standard names, not prefixed.
        value('process_cpu_seconds_total{roles="api"}').then((v) => v !== undefined),
        value('nodejs_eventloop_lag_seconds{roles="worker,host"}').then((v) => v !== undefined),
      ]);
      return checks.every(Boolean) || undefined;
    }, 60_000, 1000);
    expect(await query('{__name__=~"essh_process_.*|essh_nodejs_.*"}')).toEqual([]);
  });

  it('evaluates the alert rules, and every expression of the Grafana dashboard', async () => {
    const rules = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
    await waitFor('the rules evaluated', async () => {
      const r = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as typeof rules;
      const all = r.data.groups.flatMap((g) => g.rules);
      return all.length >= 10 && all.every((x) => x.health === 'ok') ? all : undefined;
    }, 30_000, 500);
    // Nothing is wrong with this installation: no alert fires.
    const alerts = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
    expect(alerts.data.alerts.filter((a) => a.state === 'firing').map((a) => a.labels.alertname)).toEqual([]);

    const dashboard = JSON.parse(await readFile(path.join(projectRoot, 'deploy', 'grafana', 'essh-dashboard.json'), 'utf8')) as {
      panels: { type: string; title: string; targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
    expect(exprs.length).toBeGreaterThan(20);
    const known = new Set(((await (await fetch(`${promUrl}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
    // Series that exist only once something has gone wrong in a worker.
    const onFailure = new Set(['temporal_activity_execution_failed', 'temporal_sticky_cache_miss', 'essh_drain_failed_events_total']);
    for (const { title, expr } of exprs) {
      const concrete = expr.replaceAll('$job', 'essh').replaceAll('$instance', '.*').replaceAll('$__rate_interval', '1m');
      await expect(query(concrete), `${title}: ${concrete}`).resolves.toBeDefined();
      for (const name of concrete.match(/\b(essh|temporal|process|nodejs)_[a-z0-9_]+/g) ?? []) {
        if (onFailure.has(name)) continue;
        expect(known.has(name) || known.has(`${name}_bucket`), `${title}: ${name} is scraped`).toBe(true);
      }
    }
  });
});
