// The roles deployed apart (issue 19 §1): the production build made once (`npm run build`'s script,
// into a folder of this file's own), and each role started from it with plain `node` (no tsx), as the
// systemd units in deploy/systemd start them; the units themselves checked by systemd-analyze.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { LABELS } from '../lib/docker.js';
import { ApiClient, createTenant, docker, endAllSessions, sessionContainer, startTestStack, waitForState, type TestStack } from './support/harness.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

const run = promisify(execFile);
const unitsDir = path.join(projectRoot, 'deploy', 'systemd');
/** Where the units expect the checkout with its build (docs/deploy.md). */
const INSTALL_ROOT = '/opt/essh';

let stack: TestStack;
let buildRoot: string;
let dist: string;
const processes: WorkerProcess[] = [];
let api: TestStack;

/** A role from the build, on the test stack's Temporal namespace and database. */
function startRole(role: string, env: Record<string, string> = {}, args = ['--role', role]) {
  return startWorkerProcess(stack, {
    // The build's own workflow bundle and idle init, not the run's or the checkout's.
    ESSH_WORKFLOW_BUNDLE: '', ESSH_INIT_PATH: path.join(dist, 'essh-init'), ESSH_API_PORT: '0',
    // Nothing preloaded (no tsx loader from the run's environment): plain node.
    NODE_OPTIONS: '', ...env,
  }, { args: [path.join(dist, 'server.js'), ...args], readyWhen: 'essh server ready' });
}

beforeAll(async () => {
  // The build's folder beside a node_modules, as in a checkout (/opt/essh/dist next to /opt/essh/node_modules).
  buildRoot = await mkdtemp(path.join(os.tmpdir(), 'essh-build-'));
  await symlink(path.join(projectRoot, 'node_modules'), path.join(buildRoot, 'node_modules'));
  dist = path.join(buildRoot, 'dist');
  const [build] = await Promise.all([
    run(process.execPath, ['--import', 'tsx', 'server/build.ts', dist], { cwd: projectRoot }),
    // This process runs no part of essh but its database and the operator's token: every role is a process of the build.
    startTestStack({ parts: {} }).then((s) => { stack = s; }),
  ]);
  expect(build.stderr).toContain('built into');
}, 180_000);
afterAll(async () => {
  if (api) await endAllSessions(api).catch(() => undefined);
  for (const p of processes) await p.stop();
  await stack?.stop();
  if (buildRoot) await rm(buildRoot, { recursive: true, force: true });
});

describe('the systemd units', () => {
  it('pass systemd-analyze verify, and start what the build holds', async () => {
    const units = (await readdir(unitsDir)).filter((f) => f.endsWith('.service'));
    expect(units.sort()).toEqual(['essh-api.service', 'essh-host.service', 'essh-worker.service']);
    const copy = await mkdtemp(path.join(os.tmpdir(), 'essh-units-'));
    try {
      for (const unit of units) {
        // verify checks that ExecStart's program (/usr/bin/node) exists, not its script: so each unit's
        // script is also looked for in this run's build, at the path the unit names under /opt/essh.
        const text = await readFile(path.join(unitsDir, unit), 'utf8');
        const execStart = /^ExecStart=(\S+) (\S+) --role (\S+)$/m.exec(text);
        expect(execStart, `${unit} has no ExecStart=<node> <script> --role <role>`).not.toBeNull();
        const [, node, script, role] = execStart!;
        expect(existsSync(node!), `${unit} starts ${node}, which this machine lacks`).toBe(true);
        expect(script!.startsWith(`${INSTALL_ROOT}/dist/`)).toBe(true);
        expect(existsSync(path.join(dist, path.relative(`${INSTALL_ROOT}/dist`, script!))), `${script} is not in the build`).toBe(true);
        expect(unit).toBe(`essh-${role}.service`);
        await writeFile(path.join(copy, unit), text);
        // systemd-analyze exits 0 on a misspelt key or a bad value (it warns and ignores the line):
        // a clean verify is exit 0 and nothing said.
        const verify = await run('systemd-analyze', ['verify', path.join(copy, unit)]).catch((err) => err as { code: number; stdout: string; stderr: string });
        expect({ unit, code: 'code' in verify ? verify.code : 0, said: verify.stderr.trim() }).toEqual({ unit, code: 0, said: '' });
      }
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  });
});

describe('the roles, started from the build with plain node', () => {
  it('a bad role stops at once with one line and exit code 2', async () => {
    for (const [args, sentence] of [
      [['--role', 'api,cook'], 'essh server: unknown role "cook" in --role: the roles are api, worker, host and all, comma-separated (api,worker, say)\n'],
      [[], 'essh server: no role given: name one or more of api, worker, host (or all) with ESSH_ROLES (or --role)\n'],
    ] as const) {
      const result = await run(process.execPath, [path.join(dist, 'server.js'), ...args], { env: { ...process.env, ESSH_ROLES: '' } })
        .then(() => ({ code: 0, stderr: '' }), (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }));
      expect(result).toEqual({ code: 2, stderr: sentence });
    }
  });

  it('the api answers, a host provisions and a worker runs the session it creates', async () => {
    // The host's role from ESSH_ROLES, as the units' environment file could give it.
    const [apiRole, workerRole, hostRole] = await Promise.all([
      startRole('api'), startRole('worker'), startRole('host', { ESSH_HOST_ID: 'built-host', ESSH_ROLES: 'host' }, []),
    ]);
    processes.push(apiRole, workerRole, hostRole);
    // Each process runs only its role: only the api prints an address, only the host a portal.
    const url = /essh server ready \(API (http:\/\/\S+)\)/.exec(apiRole.output())?.[1];
    expect(url, apiRole.output()).toBeDefined();
    expect(workerRole.output()).toContain('essh server ready\n');
    expect(hostRole.output()).toContain('essh server ready\n');
    api = { ...stack, api: new ApiClient(url!), url: url! };

    const health = await api.api.get('/healthz');
    expect(health.status).toBe(200);
    const openapi = await api.api.get('/openapi.json');
    expect(openapi.status).toBe(200);
    expect(openapi.body.paths['/apps/{app}/sessions']).toBeDefined();
    // The console comes from the build's prebuilt files.
    const consolePage = await fetch(`${url}/console`);
    expect(consolePage.status).toBe(200);
    expect(await consolePage.text()).toBe(await readFile(path.join(dist, 'console', 'index.html'), 'utf8'));

    const tenant = await createTenant(api);
    // A custom redaction rule is measured in the API's worker thread: the build's own entry for it.
    const rule = await api.api.post(`/accounts/${tenant.account}/redaction_rules`, api.adminToken, { name: 'tokens', pattern: 'tok_[a-z0-9]{8}' });
    expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    const badRule = await api.api.post(`/accounts/${tenant.account}/redaction_rules`, api.adminToken, { name: 'broken', pattern: 'tok_(' });
    expect(badRule.status).toBe(422);
    expect(badRule.body.message).toContain('is not a valid regular expression in RE2 syntax');
    const created = await api.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    // Provisioned by the host process (the stack's task queue), run by the worker process (the workflow).
    await waitForState(api, tenant.token, created.body.id, 'waiting_for_client', 90_000);
    const container = await docker.getContainer(sessionContainer(api, created.body.id)).inspect();
    expect(container.Config.Labels[LABELS.host]).toBe('built-host');
    // The connect block names the host process's portal: the API process learnt it from the host's report.
    const host = await stack.runtime.db.selectFrom('hosts').select(['ssh_port']).where('host_id', '=', 'built-host').executeTakeFirstOrThrow();
    expect(created.body.connect.port).toBe(host.ssh_port);
  }, 240_000);
});
