// Detached jobs (issue 21 §2, `heroku run:detached`): the command runs on the host with no client, its
// output goes to the journal and the recording, and only its exit, a terminate or expiry end it. On the
// real runtime (API, host worker, Temporal, Docker) and through the real `essh` CLI binary.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { readEvents } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { loggedInCliConfig, containerExists, createTenant, endAllSessions, waitFor, sessionContainer, startTestStack, waitForState, workflowBundle, type TestStack } from './support/harness.js';
import { runToEnd } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh.js');
/** Far shorter than the job runs: an interactive session without heartbeats would end long before it. */
const HEARTBEAT_TIMEOUT_S = 1;
const JOB = ['sh', '-c', 'echo start; sleep 3; echo done; exit 7'];

let stack: TestStack;
// No SSH portal: no client is involved (and none could send heartbeats this often).
const startStack = (reuse?: TestStack) => startTestStack({
  env: { ESSH_HEARTBEAT_TIMEOUT_S: String(HEARTBEAT_TIMEOUT_S) },
  parts: { api: true, worker: true, hostStacks: ['local'], workflowBundle: workflowBundle() },
  ...(reuse ? { reuse, namespace: reuse.namespace } : {}),
});
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let configFile: string;

beforeAll(async () => {
  stack = await startStack();
  tenant = await createTenant(stack, { plan: 'scale' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-detached-test-'));
  configFile = await loggedInCliConfig(dir, stack, tenant.token);
});
afterAll(async () => {
  if (stack) await endAllSessions(stack);
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const cliEnv = () => {
  const env: NodeJS.ProcessEnv = { ...process.env, ESSH_CONFIG: configFile };
  delete env.ESSH_API_URL;
  delete env.ESSH_TOKEN;
  return env;
};
const essh = (args: string[]) => runToEnd(process.execPath, [ESSH, ...args], { env: cliEnv(), timeoutMs: 60_000 });

async function startJob(command: string[]) {
  const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command, detach: true });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  expect(r.body.detached).toBe(true);
  return r.body.id as number;
}

async function journalLifecycle(id: number) {
  const events: { kind: string; details: Record<string, unknown> }[] = [];
  for await (const ev of readEvents(journalPath(stack.dataDir, id))) {
    if (ev.kind === 'session_started' || ev.kind === 'session_ended') events.push({ kind: ev.kind, details: ev.details });
  }
  return events;
}

async function recordedOutput(id: number) {
  const r = await stack.api.get(`/sessions/${id}/recording`, tenant.token);
  expect(r.status).toBe(200);
  return String(r.body).trim().split('\n').slice(1).map((l) => JSON.parse(l) as [number, string, string])
    .filter(([, code]) => code === 'o').map(([, , text]) => text).join('');
}

describe('a detached job', () => {
  it('runs with no client, outlives the heartbeat timeout, and ends with its exit code; its output is recorded', async () => {
    const id = await startJob(JOB);
    // Active with no client at all: nothing ever attached, yet the program runs.
    const running = await waitForState(stack, tenant.token, id, 'active');
    expect(running.connected_at).toBeNull();
    const ended = await waitForState(stack, tenant.token, id, 'ended', 60_000);
    expect(ended).toMatchObject({ end_reason: 'exit', exit_code: 7, detached: true });
    // It lasted its program's 3 s, three heartbeat timeouts without a single heartbeat.
    const ran = Date.parse(ended.ended_at) - Date.parse(running.created_at);
    expect(ran).toBeGreaterThan(3 * HEARTBEAT_TIMEOUT_S * 1000);
    expect(await recordedOutput(id)).toBe('start\ndone\n');
    const lifecycle = await journalLifecycle(id);
    expect(lifecycle.map((e) => e.kind)).toEqual(['session_started', 'session_ended']);
    expect(lifecycle[0]!.details).toMatchObject({ detached: true, command: JOB });
    expect(lifecycle[1]!.details).toMatchObject({ detached: true, end_reason: 'exit', exit_code: 7, output_complete: true });
    expect(await containerExists(sessionContainer(stack, id))).toBe(false);
    // And its Operation record closed as a success, with the code.
    const op = await stack.api.get(`/operations/${id}`, tenant.token);
    expect(op.body).toMatchObject({ status: 'succeeded', end_reason: 'exit', exit_code: 7 });
  }, 120_000);

  it('essh run --detach prints its id at once; essh logs -f follows its output live and exits with its code', async () => {
    const started = await essh(['run', '--detach', tenant.app, '--', ...JOB]);
    expect(started.code, started.stderr).toBe(0);
    const id = Number(started.stdout.toString().trim());
    expect(Number.isInteger(id) && id > 0).toBe(true);
    // `essh run` returned before the job could have ended.
    expect((await stack.api.get(`/sessions/${id}`, tenant.token)).body.state).not.toBe('ended');

    const follower = spawn(process.execPath, [ESSH, 'logs', '-f', id, '--interval', '0.5'].map(String), { env: cliEnv() });
    let out = '';
    let err = '';
    let stateWhenStartShown: string | undefined;
    follower.stderr.on('data', (c: Buffer) => (err += c.toString()));
    follower.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (stateWhenStartShown === undefined && out.includes('start')) {
        stateWhenStartShown = 'pending';
        void stack.api.get(`/sessions/${id}`, tenant.token).then((r) => (stateWhenStartShown = r.body.state));
      }
    });
    const code = await new Promise<number | null>((resolve) => follower.once('close', resolve));
    expect(out, err).toBe('start\ndone\n');
    expect(code, err).toBe(7);
    expect(err).toMatch(/ended: exit, exit code 7/);
    // `start` was shown while the job still ran: followed, not read once at the end.
    expect(stateWhenStartShown).toBe('active');

    // Plain `essh logs` prints what there is and exits.
    const logs = await essh(['logs', String(id)]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout.toString()).toBe('start\ndone\n');
  }, 120_000);

  it('a terminate ends a running job and removes its container', async () => {
    const id = await startJob(['sh', '-c', 'echo working; sleep 300']);
    await waitForState(stack, tenant.token, id, 'active');
    const t = await stack.api.post(`/sessions/${id}/terminate`, tenant.token, { reason: 'stop the job' });
    expect(t.status).toBe(202);
    const ended = await waitForState(stack, tenant.token, id, 'ended', 60_000);
    expect(ended).toMatchObject({ end_reason: 'terminated', end_message: 'stop the job', exit_code: null });
    expect(await containerExists(sessionContainer(stack, id))).toBe(false);
    const lifecycle = await journalLifecycle(id);
    expect(lifecycle.at(-1)).toMatchObject({ kind: 'session_ended', details: { end_reason: 'terminated', detached: true } });
  }, 120_000);

  it('detach without a command is refused with a sentence (422), and with start_on_connect too', async () => {
    const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { detach: true });
    expect(r.status).toBe(422);
    expect(r.body.message).toMatch(/^Invalid request: body\.command: a detached session runs the command it is given: give "command"/);
    const both = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command: ['true'], detach: true, start_on_connect: true });
    expect(both.status).toBe(422);
    expect(both.body.message).toMatch(/body\.start_on_connect: a detached session has no client to wait for/);
    const cli = await essh(['run', tenant.app, '--', 'true']);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/--detach/);
  });

  it('a host that stops while a job runs does not wait for it: the job ends container_lost, its container removed', async () => {
    const id = await startJob(['sh', '-c', 'echo long; sleep 300']);
    await waitFor('the job to print', async () => (await recordedOutput(id)) === 'long\n');
    // Following the job to its end would hold this stop for its 300 s (the worker waits for its activities).
    await stack.runtime.stop();
    stack = await startStack(stack);
    const ended = await waitForState(stack, tenant.token, id, 'ended', 90_000);
    expect(ended).toMatchObject({ end_reason: 'container_lost', exit_code: null });
    expect(ended.end_message).toMatch(/host process stopped while it ran/);
    expect(await containerExists(sessionContainer(stack, id))).toBe(false);
    expect(await recordedOutput(id)).toBe('long\n');
  }, 180_000);
});
