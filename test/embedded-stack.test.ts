import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot, toolPath } from '../lib/config.js';
import { removeInstallationFromEngine } from '../host/containers.js';
import { ApiClient, containerExists, docker, rememberInstallation, waitFor } from './support/harness.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';

const run = promisify(execFile);

interface Started {
  child: ChildProcess;
  output: () => string;
  apiUrl: string;
}

/** `npm start`'s program, as a user runs it: its own process, its own dev server, its own ports. */
async function startStack(env: Record<string, string>): Promise<Started> {
  // Like `npm start`, through tsx's loader in one process: the tsx command would relay the SIGINT to a
  // child and SIGKILL it (exit 130) if the child did not acknowledge it within 30 ms, which a busy
  // machine can miss.
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/start.ts'], {
    cwd: projectRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`npm start exited ${code} before it was up:\n${out}`))),
  );
  exited.catch(() => undefined);
  const apiUrl = await Promise.race([
    waitFor('the stack to say it is up', async () => /REST API\s+(http:\/\/\S+)/.exec(out)?.[1], 90_000, 200),
    exited,
  ]);
  return { child, output: () => out, apiUrl };
}

async function stopStack(s: Started): Promise<number | null> {
  if (s.child.exitCode !== null) return s.child.exitCode;
  const exited = new Promise<number | null>((r) => s.child.once('exit', (code) => r(code)));
  s.child.kill('SIGINT');
  return exited;
}

describe('npm start: the embedded stack', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('seeds the demo, serves sessions, stops on Ctrl-C and carries live sessions over a restart', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'essh-start-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const temporalPort = await freePort();
    const env = {
      ESSH_DATA_DIR: dataDir,
      ESSH_TEMPORAL_DEV_PORT: String(temporalPort),
      TEMPORAL_UI_PORT: String(await freePort()),
      ESSH_API_PORT: String(await freePort()),
      ESSH_SSH_PORT: String(await freePort()),
      ESSH_METRICS_PORT: String(await freePort()),
      ESSH_LOG_LEVEL: 'warn',
    };
    let first = await startStack(env);
    cleanups.push(() => stopStack(first));
    expect(first.output()).toContain('seeded the demo');
    expect(first.output()).toMatch(/Next: start a session/);

    for (const file of ['demo-token', 'admin-token']) {
      const st = await stat(path.join(dataDir, file));
      expect((st.mode & 0o777).toString(8)).toBe('600');
    }
    const demoToken = (await readFile(path.join(dataDir, 'demo-token'), 'utf8')).trim();
    const adminToken = (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim();
    const api = new ApiClient(first.apiUrl);
    expect((await api.get('/me', demoToken)).body).toMatchObject({ email: 'demo@example.com', role: 'member', accounts: ['demo'] });
    expect((await api.get('/me', adminToken)).body).toMatchObject({ role: 'operator' });
    // The token never appears in the stack's own output.
    expect(first.output()).not.toContain(demoToken);
    expect(first.output()).not.toContain(adminToken);

    // The Web UI answers.
    const ui = await fetch(`http://127.0.0.1:${env.TEMPORAL_UI_PORT}/`);
    expect(ui.status).toBe(200);

    const created = await api.post('/apps/demo/sessions', demoToken, {});
    expect(created.status).toBe(201);
    const id = created.body.id as number;
    await waitFor('the demo session to be ready', async () => (await api.get(`/sessions/${id}`, demoToken)).body.state === 'waiting_for_client');
    const containerId = (await api.get(`/sessions/${id}`, demoToken)).body.container_id as string;
    // The stack's installation keeps its warm pool and network on the engine after it stops, as a real
    // one must; this throw-away one is removed when the file ends, after the stack has stopped.
    const installation = (await docker.getContainer(containerId).inspect()).Config.Labels['essh.instance']!;
    rememberInstallation(installation);
    cleanups.unshift(() => removeInstallationFromEngine(docker, installation));

    // The six search attributes are registered: the operator's query finds the session.
    const temporal = toolPath('temporal');
    const address = ['--address', `127.0.0.1:${temporalPort}`];
    await waitFor('the session in visibility', async () => {
      const { stdout } = await run(temporal, ['workflow', 'list', ...address, '--query',
        `EsshApp="demo" AND EsshAccount="demo" AND EsshUserId="1" AND EsshOperationId=${id} AND EsshState="waiting_for_client"`]);
      return stdout.includes(`ssh-session-${id}`);
    }, 15_000, 500);

    expect(await stopStack(first)).toBe(0);
    expect(await containerExists(containerId)).toBe(true);

    // Started again on the same data dir: the session carries on, and still ends and cleans up.
    first = await startStack(env);
    expect(first.output()).not.toContain('seeded the demo');
    const again = new ApiClient(first.apiUrl);
    expect((await again.get(`/sessions/${id}`, demoToken)).body.state).toBe('waiting_for_client');
    const { stdout: described } = await run(temporal, ['workflow', 'query', ...address, '--workflow-id', `ssh-session-${id}`, '--name', 'describe']);
    expect(described).toContain('waiting_for_client');
    expect((await again.post(`/sessions/${id}/terminate`, demoToken, { reason: 'test over' })).status).toBe(202);
    await waitFor('the session to end', async () => (await again.get(`/sessions/${id}`, demoToken)).body.state === 'ended', 30_000);
    expect(await containerExists(containerId)).toBe(false);
    expect(await stopStack(first)).toBe(0);
  });
});
