// Records one real history of the session workflow per path it can take, as replay fixtures for
// test/replay.test.ts. NOT part of `npm test`: run it by hand when a workflow change adds a path
// (see test/replay/histories/README.md and docs/workflow-versioning.md):
//
//   ESSH_REPLAY_PREFIX=v2 [ESSH_REPLAY_PATHS=exit,cancel] npm run record-histories
//
// It starts real essh stacks (API, workers, host agent, SSH portal) on the run's Temporal dev server
// (test/support/global-setup.ts, which suggests continue-as-new at 300 events) and the local Docker engine,
// drives one session down each path, and writes every run of each workflow as
// `<prefix>-<path>.json` (`<prefix>-<path>-run<N>.json` for a continue-as-new chain): the JSON that
// `temporal workflow show --output json` prints. It never overwrites a fixture.
//
// Sessions are driven as the current code runs them: the program starts by `docker exec` when a
// client attaches through the portal (the harness's ssh2 client, or OpenSSH), and the portal signals
// heartbeat, clientDisconnected and programExited. Signals are sent directly only where no client
// could produce the path (a heartbeat timeout, a heartbeat during provisioning, extra connections for
// continue-as-new). The v1 fixtures came from this file's version at their commit (see the manifest).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import { historyFromJSON, historyJsonVia, historyToJSON, type History } from './history-json.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { toolPath } from '../../lib/config.js';
import {
  clientDisconnectedSignal, heartbeatSignal, sessionWorkflowId, terminateSignal, type SessionResult,
} from '../../shapes/session-workflow.js';
import type { EndReason } from '../../shapes/enumerations.js';
import { apiAndWorkflows,
  createTenant, endAllSessions, openSession, runInSession, sleep, startTestStack, waitFor, waitForState, workflowBundle, type TestStack,
} from '../support/harness.js';
import { generateKey, keyOnly, passwordOnly, registerKey, runToEnd, sshArgs } from '../support/portal-terminal.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';

const run = promisify(execFile);

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const HISTORIES_DIR = path.join(HERE, 'histories');
const REPO = path.resolve(HERE, '../..');

const PREFIX = process.env.ESSH_REPLAY_PREFIX ?? '';
const ONLY = process.env.ESSH_REPLAY_PATHS ? new Set(process.env.ESSH_REPLAY_PATHS.split(',').map((s) => s.trim())) : null;

/** Main stack: 4 s heartbeat timeout (harness default), portal heartbeats every second. */
let stack: TestStack;
/** A second stack whose sessions give up waiting for a client after 3 s. */
let impatient: TestStack;
let dir: string;
/** Stacks a path started for itself (with a worker process it kills), stopped at the end. */
const extra: { stack: TestStack; worker?: WorkerProcess }[] = [];

interface Recorded {
  path: string;
  /** The stack it ran on. */
  on: TestStack;
  description: string;
  workflowId: string;
  result: SessionResult;
  runs: { runId: string; history: History }[];
}

interface PathSpec {
  name: string;
  description: string;
  expect: { end_reason: EndReason; exit_code?: number | null; runs_at_least?: number };
  /** Signals the history must contain (by name), so that a fixture holds what its name says. */
  signals?: string[];
  /** Anything else the history must show to stand for this path: undefined if it does, else what is missing. */
  check?: (runs: History[]) => string | undefined;
  /** Drives one session and returns its id; `on` is the stack it was created on (default: the main one). */
  drive: () => Promise<{ id: number; on?: TestStack }>;
}

beforeAll(async () => {
  if (!/^v\d+$/.test(PREFIX)) throw new Error('set ESSH_REPLAY_PREFIX to the fixtures\' version prefix (v1, v2, …); see test/replay/histories/README.md');
  const { stdout: dirty } = await run('git', ['status', '--porcelain', '--', 'workflows'], { cwd: REPO });
  if (dirty.trim() && process.env.ESSH_REPLAY_ALLOW_DIRTY !== '1') {
    throw new Error(`workflows/ has uncommitted changes; fixtures must come from committed code (ESSH_REPLAY_ALLOW_DIRTY=1 to override):\n${dirty}`);
  }
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-record-'));
  [stack, impatient] = await Promise.all([
    startTestStack({
      env: { ESSH_PORTAL_HEARTBEAT_S: '1' },
      // `short`: a dedicated stack with a 6 s maximum session duration, served by this same process.
      parts: { api: true, worker: true, hostStacks: ['local', 'short'], workflowBundle: workflowBundle(), portal: true },
    }),
    startTestStack({ env: { ESSH_CONNECT_TIMEOUT_S: '3' } }),
  ]);
});

afterAll(async () => {
  for (const e of extra) {
    await endAllSessions(e.stack).catch(() => undefined);
    await e.worker?.stop();
    await e.stack.stop();
  }
  for (const s of [stack, impatient]) {
    if (!s) continue;
    await endAllSessions(s).catch(() => undefined);
    await s.stop();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function createSession(s: TestStack, t: { app: string; token: string }, body: object = {}) {
  const r = await s.api.post(`/apps/${t.app}/sessions`, t.token, body);
  if (r.status !== 201) throw new Error(`creating a session: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { id: number; connect: { user: string; token: string } };
}

const handleOf = (s: TestStack, id: number) => s.runtime.client.workflow.getHandle(sessionWorkflowId(id));
const heartbeat = (s: TestStack, id: number, connection = 'rec-conn') =>
  handleOf(s, id).signal(heartbeatSignal, { connection_id: connection });

/**
 * A stack whose session workflows run in a worker process of its own, and a session on it made active
 * by a heartbeat signalled directly; `outage()` then SIGKILLs that worker, stays silent for longer than
 * the heartbeat timeout and starts the worker again: the workflow sees its heartbeat deadline only
 * late, as after a Temporal outage, and gives the client one more timeout (the patch marker is then in
 * the history).
 */
async function sessionBehindOutage() {
  const own = await startTestStack({ parts: { api: true, hostStacks: ['local'] } });
  const entry: { stack: TestStack; worker?: WorkerProcess } = { stack: own };
  extra.push(entry);
  entry.worker = await startWorkerProcess(own, { ESSH_WORKER_ROLES: 'main' });
  const t = await createTenant(own, { plan: 'scale' });
  const s = await createSession(own, t);
  await waitForState(own, t.token, s.id, 'waiting_for_client', 60_000);
  await heartbeat(own, s.id, 'c1');
  await waitForState(own, t.token, s.id, 'active');
  return {
    stack: own, id: s.id,
    /**
     * With `beatWhileDown`, a heartbeat is signalled while the worker is down, after the deadline has
     * passed: it comes in the restarted worker's first task, before the overdue timer (the late-beat
     * grace, marker LATE_BEAT_PATCH, instead of the late-timer one).
     */
    async outage(opts: { beatWhileDown?: boolean } = {}) {
      await entry.worker!.kill('SIGKILL');
      await sleep((own.config.session.heartbeatTimeoutS + 3) * 1000);
      if (opts.beatWhileDown) await heartbeat(own, s.id, 'c1');
      entry.worker = await startWorkerProcess(own, { ESSH_WORKER_ROLES: 'main' });
      const marker = opts.beatWhileDown ? LATE_BEAT_PATCH : GRACE_PATCH;
      await waitFor(`the ${marker} marker in the history`, async () => patchIds(await handleOf(own, s.id).fetchHistory()).includes(marker), 60_000, 250);
    },
  };
}

const GRACE_PATCH = 'heartbeat-grace-after-outage';
/** Since v8: a heartbeat that arrives after the deadline passed unseen gives that grace too. */
const LATE_BEAT_PATCH = 'heartbeat-grace-on-late-beat';
/** Since v5: the grace is a heartbeat timeout plus how late the deadline was seen. */
const SCALED_GRACE_PATCH = 'heartbeat-grace-scales-with-outage';
const graceMarkers = (h: History) => {
  const ids = patchIds(h);
  const missing = [GRACE_PATCH, SCALED_GRACE_PATCH].filter((p) => !ids.includes(p));
  return missing.length ? `no ${missing.join(' or ')} marker` : undefined;
};

/**
 * A stack whose host (host worker, portal) runs in a process of its own, the API and the workflows here
 * with a short host stale time: `lose()` SIGKILLs the host for good, and this process's host-loss sweep
 * signals `hostLost` to its sessions.
 */
async function stackWithHostToLose() {
  const own = await startTestStack({
    parts: apiAndWorkflows(),
    env: { ESSH_HOST_STALE_S: '8', ESSH_HOST_LOSS_SWEEP_S: '2' },
  });
  const entry: { stack: TestStack; worker?: WorkerProcess } = { stack: own };
  extra.push(entry);
  entry.worker = await startWorkerProcess(own, { ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: `rec-lost-${own.runtime.instanceId}` });
  return { stack: own, lose: () => entry.worker!.kill('SIGKILL') };
}

const HOST_LOST_PATCH = 'host-lost';
/** Since v9: the portal's idleTimeout signal ends the session `idle`. */
const IDLE_PATCH = 'idle-timeout';

function paths(): PathSpec[] {
  const local = () => createTenant(stack, { plan: 'scale' });
  /**
   * A session attached through the SSH portal with the ssh2 client and its token, as `essh ssh` does
   * (the program starts by docker exec when the client attaches): once the session is `active`.
   */
  const attached = async (t: { app: string; token: string }, opts: Parameters<typeof openSession>[2] = {}, on: TestStack = stack) => {
    const s = await openSession(on, t, { tty: true, ...opts });
    await waitForState(on, t.token, s.id, 'active');
    return s;
  };
  return [
    {
      name: 'exit',
      description: 'API session with command `sh -c "echo hi; exit 3"`, attached over the SSH portal by the ssh2 client without a PTY; the program exits 3 and the portal signals programExited.',
      expect: { end_reason: 'exit', exit_code: 3 },
      signals: ['heartbeat', 'programExited'],
      async drive() {
        const t = await local();
        const r = await runInSession(stack, t, { command: ['sh', '-c', 'echo hi; exit 3'] });
        if (r.exitCode !== 3 || r.stdout.toString() !== 'hi\n') throw new Error(`the client got ${r.exitCode} and ${JSON.stringify(r.stdout.toString())}`);
        return { id: r.id };
      },
    },
    {
      name: 'exit-attached',
      description: 'API session with command `sh -c "sleep 2; exit 5"`, attached over the SSH portal with the session token by OpenSSH (-tt, a PTY); exits 5 while active.',
      expect: { end_reason: 'exit', exit_code: 5 },
      signals: ['heartbeat', 'programExited'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t, { command: ['sh', '-c', 'sleep 2; exit 5'] });
        await waitForState(stack, t.token, s.id, 'waiting_for_client');
        const r = await runToEnd('sshpass', ['-e', 'ssh', '-tt', ...sshArgs(stack.runtime.sshPort!, passwordOnly), `${s.connect.user}@127.0.0.1`], {
          env: { ...process.env, SSHPASS: s.connect.token }, timeoutMs: 30_000,
        });
        if (r.code !== 5) throw new Error(`ssh exited ${r.code}, not 5: ${r.stderr}`);
        return { id: s.id };
      },
    },
    {
      name: 'exit-oom',
      description: 'A 128 MB session whose program holds 300 MB (`head -c 300m /dev/zero | tail`), attached by the ssh2 client: the kernel OOM-kills it, exit 137, programExited {oom_killed: true}.',
      expect: { end_reason: 'exit', exit_code: 137 },
      signals: ['heartbeat', 'programExited'],
      check: ([h]) => (signalInputs(h!, 'programExited').some((x) => /"oom_killed":true/.test(x)) ? undefined : 'no programExited with oom_killed: true'),
      async drive() {
        const t = await local();
        const r = await runInSession(stack, t, { command: ['sh', '-c', 'head -c 300m /dev/zero | tail; exit $?'], body: { container_size_mb: 128 } });
        if (r.exitCode !== 137) throw new Error(`the client got exit status ${r.exitCode}, not 137: ${r.stderr.toString()}`);
        return { id: r.id };
      },
    },
    {
      name: 'portal-exec-exit',
      description: 'The portal\'s own session: `ssh <app>@portal \'echo from-portal; exit 3\'` with a registered key and no PTY (OpenSSH): the portal creates the session and attaches; exits 3.',
      expect: { end_reason: 'exit', exit_code: 3 },
      signals: ['heartbeat', 'programExited'],
      async drive() {
        const t = await local();
        const key = await generateKey(dir, `key-${t.app}`);
        await registerKey(stack, t.token, t.user.id, key.keyFile);
        const r = await runToEnd('ssh', [...sshArgs(stack.runtime.sshPort!, keyOnly(key.keyFile)), `${t.app}@127.0.0.1`, 'echo from-portal; exit 3'], { timeoutMs: 30_000 });
        if (r.code !== 3) throw new Error(`ssh exited ${r.code}, not 3: ${r.stderr}`);
        const list = await stack.api.get(`/sessions?app=${t.app}`, t.token);
        const [only] = list.body.items as { id: number }[];
        if (!only || (list.body.items as unknown[]).length !== 1) throw new Error(`expected one session of ${t.app}: ${JSON.stringify(list.body)}`);
        return { id: only.id };
      },
    },
    {
      name: 'exit-container',
      description: 'The container\'s own end while waiting for a client: `docker exec <container> kill -TERM 1` ends its idle init (exit 0, not through the engine\'s kill): the host agent signals containerExited {lost: false}.',
      expect: { end_reason: 'exit', exit_code: 0 },
      signals: ['containerExited'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t);
        const waiting = await waitForState(stack, t.token, s.id, 'waiting_for_client');
        await run('docker', ['exec', waiting.container_id, 'kill', '-TERM', '1']);
        return { id: s.id };
      },
    },
    {
      name: 'heartbeat-while-provisioning',
      description:
        'A heartbeat signalled the moment the session exists, while provisionContainer is still running (the workflow goes from ' +
        'waiting_for_client to active right after provisioning), then clientDisconnected. Signals sent directly.',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat', 'clientDisconnected'],
      check: ([h]) => (heartbeatBeforeProvisioned(h!) ? undefined : 'the first heartbeat came after provisionContainer completed'),
      async drive() {
        const t = await local();
        // The race is ours to win (the heartbeat goes the moment the workflow exists); a few tries at most.
        for (let attempt = 1; ; attempt++) {
          const s = await createSession(stack, t);
          await heartbeat(stack, s.id, 'early');
          await waitForState(stack, t.token, s.id, 'active');
          await handleOf(stack, s.id).signal(clientDisconnectedSignal, { connection_id: 'early', reason: 'closed by client' });
          await handleOf(stack, s.id).result();
          if (heartbeatBeforeProvisioned(await handleOf(stack, s.id).fetchHistory()) || attempt === 5) return { id: s.id };
        }
      },
    },
    {
      name: 'disconnect-signal',
      description: 'Attached over the portal by the ssh2 client with a PTY (the app\'s shell), heartbeating for ~3 s, then the client closes its connection: the portal signals clientDisconnected.',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat', 'clientDisconnected'],
      async drive() {
        const t = await local();
        const s = await attached(t);
        await sleep(3000);
        s.shell.close();
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'disconnect-heartbeat-timeout',
      description: 'Active with heartbeats (signalled directly) for ~6 s, then silent: ended by the 4 s heartbeat timeout (a timer).',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t);
        await waitForState(stack, t.token, s.id, 'waiting_for_client');
        await heartbeat(stack, s.id);
        await waitForState(stack, t.token, s.id, 'active');
        for (let i = 0; i < 4; i++) {
          await sleep(1500);
          await heartbeat(stack, s.id);
        }
        return { id: s.id };
      },
    },
    {
      name: 'detached-exit',
      description: 'API session with detach and command `sh -c "echo start; sleep 2; exit 7"`: the host activity runDetachedProgram runs it with no client; no heartbeat ever; it exits 7.',
      expect: { end_reason: 'exit', exit_code: 7 },
      check: (runs) => (JSON.stringify(runs).includes('runDetachedProgram') ? undefined : 'no runDetachedProgram activity'),
      async drive() {
        const t = await local();
        const s = await createSession(stack, t, { command: ['sh', '-c', 'echo start; sleep 2; exit 7'], detach: true });
        await waitForState(stack, t.token, s.id, 'ended', 60_000);
        return { id: s.id };
      },
    },
    {
      name: 'detached-terminate',
      description: 'API session with detach and command `sleep 300`, terminated by the owner while its program runs (a heartbeat and a clientDisconnected signalled meanwhile change nothing).',
      expect: { end_reason: 'terminated' },
      signals: ['heartbeat', 'clientDisconnected', 'terminate'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t, { command: ['sleep', '300'], detach: true });
        await waitForState(stack, t.token, s.id, 'active');
        await heartbeat(stack, s.id);
        await handleOf(stack, s.id).signal(clientDisconnectedSignal, { connection_id: 'rec-conn', reason: 'not a client of a detached job' });
        const r = await stack.api.post(`/sessions/${s.id}/terminate`, t.token, { reason: 'stop the job' });
        if (r.status !== 202) throw new Error(`terminate: ${r.status} ${JSON.stringify(r.body)}`);
        return { id: s.id };
      },
    },
    {
      name: 'terminate-api',
      description: 'POST /sessions/{id}/terminate by the owner while waiting_for_client.',
      expect: { end_reason: 'terminated' },
      signals: ['terminate'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t);
        await waitForState(stack, t.token, s.id, 'waiting_for_client');
        const r = await stack.api.post(`/sessions/${s.id}/terminate`, t.token, { reason: 'done for today' });
        if (r.status !== 202) throw new Error(`terminate: ${r.status} ${JSON.stringify(r.body)}`);
        return { id: s.id };
      },
    },
    {
      name: 'terminate-api-attached',
      description: 'Attached over the portal by the ssh2 client (PTY), then POST /sessions/{id}/terminate by the owner; the client is told and let go.',
      expect: { end_reason: 'terminated' },
      signals: ['heartbeat', 'terminate'],
      async drive() {
        const t = await local();
        const s = await attached(t);
        await sleep(1500);
        const r = await stack.api.post(`/sessions/${s.id}/terminate`, t.token, { reason: 'done for today' });
        if (r.status !== 202) throw new Error(`terminate: ${r.status} ${JSON.stringify(r.body)}`);
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'idle',
      description:
        'Attached over the portal by the ssh2 client (PTY) on an account whose idle_timeout_s is 3; nothing is typed and nothing printed after ' +
        'the prompt: the portal warns the client, then signals idleTimeout; the session ends idle (patch idle-timeout).',
      expect: { end_reason: 'idle' },
      signals: ['heartbeat', 'idleTimeout'],
      check: ([h]) => (patchIds(h!).includes(IDLE_PATCH) ? undefined : `no ${IDLE_PATCH} marker`),
      async drive() {
        const t = await local();
        const r = await stack.api.request('PATCH', `/accounts/${t.account}`, stack.adminToken, { idle_timeout_s: 3 });
        if (r.status !== 200) throw new Error(`setting the idle timeout: ${r.status} ${JSON.stringify(r.body)}`);
        const s = await attached(t);
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'terminate-signal',
      description: 'Attached over the portal by the ssh2 client (PTY), then the Temporal signal `terminate` {reason: maintenance, by: ops@example.com} sent directly to the workflow.',
      expect: { end_reason: 'terminated' },
      signals: ['heartbeat', 'terminate'],
      async drive() {
        const t = await local();
        const s = await attached(t);
        await sleep(1500);
        await handleOf(stack, s.id).signal(terminateSignal, { reason: 'maintenance', by: 'ops@example.com' });
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'cancel',
      description: 'Attached over the portal by the ssh2 client (PTY), then a Temporal cancellation request (WorkflowHandle.cancel()): ended as terminated by temporal.',
      expect: { end_reason: 'terminated' },
      signals: ['heartbeat'],
      async drive() {
        const t = await local();
        const s = await attached(t);
        await handleOf(stack, s.id).cancel();
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'expired',
      description: 'On a dedicated stack `short` with max_session_duration_s 6, attached over the portal by the ssh2 client (PTY, heartbeats every second) until it expires.',
      expect: { end_reason: 'expired' },
      signals: ['heartbeat'],
      async drive() {
        const st = await stack.api.post('/stacks', stack.adminToken, { name: 'short', max_session_duration_s: 6, dedicated: true });
        if (st.status !== 201) throw new Error(`creating stack short: ${st.status} ${JSON.stringify(st.body)}`);
        const t = await createTenant(stack, { stackName: 'short', plan: 'growth' });
        const s = await openSession(stack, t, { tty: true });
        await s.done;
        return { id: s.id };
      },
    },
    {
      name: 'connect-timeout',
      description: 'A stack started with ESSH_CONNECT_TIMEOUT_S=3; nobody attaches.',
      expect: { end_reason: 'connect_timeout' },
      async drive() {
        const t = await createTenant(impatient, { plan: 'scale' });
        const s = await createSession(impatient, t);
        return { id: s.id, on: impatient };
      },
    },
    {
      name: 'provision-failed',
      description: 'An app whose image essh/does-not-exist:1.0 is not on the Docker host: the provisioning activity fails with a non-retryable ProvisionError.',
      expect: { end_reason: 'provision_failed' },
      async drive() {
        const t = await createTenant(stack, { image: 'essh/does-not-exist:1.0' });
        const s = await createSession(stack, t);
        return { id: s.id };
      },
    },
    {
      name: 'provision-no-host',
      description:
        'An app on a dedicated stack `nohost` that no host worker serves: provisionContainer times out after its 5 min schedule-to-start ' +
        'timeout, the session ends provision_failed and, since no host ever took the container, skips the teardown on the host (endSession).',
      expect: { end_reason: 'provision_failed' },
      check: ([h]) => (activityNames(h!).includes('endSession') ? 'endSession was scheduled' : undefined),
      async drive() {
        const st = await stack.api.post('/stacks', stack.adminToken, { name: 'nohost', dedicated: true });
        if (st.status !== 201) throw new Error(`creating stack nohost: ${st.status} ${JSON.stringify(st.body)}`);
        const t = await createTenant(stack, { stackName: 'nohost', plan: 'growth' });
        const s = await createSession(stack, t);
        return { id: s.id };
      },
    },
    {
      name: 'container-lost',
      description: '`docker rm -f` of the container of a session waiting for its client: the host agent reports it lost.',
      expect: { end_reason: 'container_lost' },
      signals: ['containerExited'],
      async drive() {
        const t = await local();
        const s = await createSession(stack, t);
        const waiting = await waitForState(stack, t.token, s.id, 'waiting_for_client');
        await run('docker', ['rm', '-f', waiting.container_id]);
        return { id: s.id };
      },
    },
    {
      name: 'host-lost',
      description:
        'A session waiting for its client on a host whose process is then SIGKILLed for good: the worker\'s host-loss sweep (host stale after 8 s) ' +
        'signals hostLost; the session ends container_lost naming the host, with no endSession asked of it (patch host-lost).',
      expect: { end_reason: 'container_lost' },
      signals: ['hostLost'],
      check: ([h]) => (!patchIds(h!).includes(HOST_LOST_PATCH) ? `no ${HOST_LOST_PATCH} marker` : activityNames(h!).includes('endSession') ? 'endSession was scheduled' : undefined),
      async drive() {
        const o = await stackWithHostToLose();
        const t = await createTenant(o.stack, { plan: 'scale' });
        const s = await createSession(o.stack, t);
        await waitForState(o.stack, t.token, s.id, 'waiting_for_client', 60_000);
        await o.lose();
        return { id: s.id, on: o.stack };
      },
    },
    {
      name: 'host-lost-in-teardown',
      description:
        'Attached through the host\'s portal by the ssh2 client (PTY), then the host process is SIGKILLed for good: the 4 s heartbeat timeout ends ' +
        'the session (disconnect) and its endSession waits on the dead host\'s queue until the sweep\'s hostLost cancels it; ended container_lost.',
      expect: { end_reason: 'container_lost' },
      signals: ['heartbeat', 'hostLost'],
      check: ([h]) => {
        if (!patchIds(h!).includes(HOST_LOST_PATCH)) return `no ${HOST_LOST_PATCH} marker`;
        if (!activityNames(h!).includes('endSession')) return 'no endSession was scheduled before the host was lost';
        return (h!.events ?? []).some((e) => e.activityTaskCancelRequestedEventAttributes) ? undefined : 'no activity cancellation requested';
      },
      async drive() {
        const o = await stackWithHostToLose();
        const t = await createTenant(o.stack, { plan: 'scale' });
        const s = await attached(t, {}, o.stack);
        await o.lose();
        return { id: s.id, on: o.stack };
      },
    },
    {
      name: 'outage-grace',
      description:
        'Active (heartbeat signalled directly), then the worker running the workflows is SIGKILLed and nothing is signalled for the 4 s heartbeat ' +
        'timeout + 3 s; the worker starts again and sees the heartbeat deadline late (as after a Temporal outage): a grace of one more timeout ' +
        'plus the lateness (patches heartbeat-grace-after-outage, heartbeat-grace-scales-with-outage). Heartbeats resume for 6 s, then clientDisconnected.',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat', 'clientDisconnected'],
      check: ([h]) => graceMarkers(h!),
      async drive() {
        const o = await sessionBehindOutage();
        await o.outage();
        for (let i = 0; i < 6; i++) {
          await heartbeat(o.stack, o.id, 'c1');
          await sleep(1000);
        }
        await handleOf(o.stack, o.id).signal(clientDisconnectedSignal, { connection_id: 'c1', reason: 'closed by client' });
        return { id: o.id, on: o.stack };
      },
    },
    {
      name: 'outage-late-beat',
      description:
        'As outage-grace, but a heartbeat is signalled while the worker is down, after the deadline passed: the restarted worker sees it before the ' +
        'overdue timer, in one task, and gives the grace of a timeout plus the lateness (patch heartbeat-grace-on-late-beat); then silence: the ' +
        'session ends with disconnect at the grace\'s end.',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat'],
      check: ([h]) => (patchIds(h!).includes(LATE_BEAT_PATCH) ? undefined : `no ${LATE_BEAT_PATCH} marker`),
      async drive() {
        const o = await sessionBehindOutage();
        await o.outage({ beatWhileDown: true });
        return { id: o.id, on: o.stack };
      },
    },
    {
      name: 'outage-grace-timeout',
      description:
        'As outage-grace, but no heartbeat comes after the grace: the session ends with disconnect one heartbeat timeout plus the lateness after the late deadline was seen.',
      expect: { end_reason: 'disconnect' },
      signals: ['heartbeat'],
      check: ([h]) => graceMarkers(h!),
      async drive() {
        const o = await sessionBehindOutage();
        await o.outage();
        return { id: o.id, on: o.stack };
      },
    },
    {
      name: 'continue-as-new',
      description:
        'Attached over the portal by the ssh2 client (PTY), plus heartbeats from 5 more connection ids signalled directly in bursts until the ' +
        'workflow has continued as new at least twice (the dev server suggests it at 300 events); then clientDisconnected for those 5, and the ' +
        'client closes: the last run ends with disconnect from the carried connections. One file per run.',
      expect: { end_reason: 'disconnect', runs_at_least: 3 },
      signals: ['heartbeat', 'clientDisconnected'],
      async drive() {
        const t = await local();
        const s = await attached(t);
        const handle = handleOf(stack, s.id);
        const firstRunId = (await handle.describe()).runId;
        const connections = Array.from({ length: 5 }, (_, i) => `conn-${i}`);
        let sent = 0;
        await waitFor('two continue-as-new hand-overs', async () => {
          // A burst, then a pause: a run can only hand over in a moment when no signal waits for it.
          for (let i = 0; i < 40; i++) await handle.signal(heartbeatSignal, { connection_id: connections[sent++ % connections.length]! });
          await sleep(300);
          return (await runChain(stack.runtime.client, sessionWorkflowId(s.id), firstRunId)).length >= 3;
        }, 90_000, 0);
        for (const c of connections) await handle.signal(clientDisconnectedSignal, { connection_id: c, reason: 'closed by client' });
        // The portal's own connection, carried across the runs, is the last to go.
        s.shell.close();
        await s.done;
        return { id: s.id };
      },
    },
  ];
}

/** The run ids of a workflow's continue-as-new chain, from its first run, each from its history. */
async function runChain(client: Client, workflowId: string, firstRunId: string): Promise<string[]> {
  const ids = [firstRunId];
  for (;;) {
    const history = await client.workflow.getHandle(workflowId, ids[ids.length - 1]).fetchHistory();
    const last = history.events?.[history.events.length - 1];
    const next = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
    if (!next) return ids;
    ids.push(next);
  }
}

function activityNames(h: History): string[] {
  return (h.events ?? []).flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
}

/** A heartbeat signal is in the history before provisionContainer's completion. */
function heartbeatBeforeProvisioned(h: History): boolean {
  const events = h.events ?? [];
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'provisionContainer')?.eventId;
  const done = events.findIndex((e) => scheduled !== undefined && String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(scheduled));
  const beat = events.findIndex((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'heartbeat');
  return beat >= 0 && done >= 0 && beat < done;
}

/** The ids of the patches whose markers a history holds. */
function patchIds(h: History): string[] {
  return (h.events ?? []).flatMap((e) => {
    const a = e.markerRecordedEventAttributes;
    if (a?.markerName !== 'core_patch') return [];
    const data = a.details?.['patch-data']?.payloads?.[0]?.data;
    return data ? [(JSON.parse(Buffer.from(data).toString('utf8')) as { id: string }).id] : [];
  });
}

/** The JSON payloads of a history's signals of that name. */
function signalInputs(h: History, name: string): string[] {
  return (h.events ?? []).flatMap((e) => {
    const a = e.workflowExecutionSignaledEventAttributes;
    if (a?.signalName !== name) return [];
    return (a.input?.payloads ?? []).map((p) => Buffer.from(p.data ?? new Uint8Array()).toString('utf8'));
  });
}

function signalNames(h: History): string[] {
  return (h.events ?? []).flatMap((e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? []);
}

async function record(spec: PathSpec): Promise<Recorded> {
  const { id, on = stack } = await spec.drive();
  const workflowId = sessionWorkflowId(id);
  const client = on.runtime.client;
  // The first run's id is that of the chain's first execution, whichever run is current now.
  const current = await client.workflow.getHandle(workflowId).describe();
  const firstHistory = await client.workflow.getHandle(workflowId, current.runId).fetchHistory();
  const firstRunId = firstHistory.events?.[0]?.workflowExecutionStartedEventAttributes?.firstExecutionRunId || current.runId;
  const result = (await client.workflow.getHandle(workflowId).result()) as SessionResult;
  const runIds = await runChain(client, workflowId, firstRunId);
  const runs = [];
  for (const runId of runIds) runs.push({ runId, history: await client.workflow.getHandle(workflowId, runId).fetchHistory() });

  expect(result.end_reason, `${spec.name}: ${JSON.stringify(result)}`).toBe(spec.expect.end_reason);
  if (spec.expect.exit_code !== undefined) expect(result.exit_code, spec.name).toBe(spec.expect.exit_code);
  expect(runs.length, `${spec.name}: runs`).toBeGreaterThanOrEqual(spec.expect.runs_at_least ?? 1);
  if (!spec.expect.runs_at_least) expect(runs.length, `${spec.name}: continued as new unexpectedly`).toBe(1);
  const seen = new Set(runs.flatMap((r) => signalNames(r.history)));
  for (const sig of spec.signals ?? []) expect(seen.has(sig), `${spec.name}: no ${sig} signal in its history (saw ${[...seen]})`).toBe(true);
  const problem = spec.check?.(runs.map((r) => r.history));
  expect(problem, `${spec.name}: the history does not show its path`).toBeUndefined();
  const last = runs[runs.length - 1]!.history.events!;
  expect(last[last.length - 1]?.workflowExecutionCompletedEventAttributes, `${spec.name}: the last run did not complete`).toBeTruthy();
  return { path: spec.name, on, description: spec.description, workflowId, result, runs };
}

const fileNames = (r: Recorded) =>
  r.runs.length === 1 ? [`${PREFIX}-${r.path}.json`] : r.runs.map((_, i) => `${PREFIX}-${r.path}-run${i + 1}.json`);

it('records one history per session path', async () => {
  const started = Date.now();
  const specs = paths().filter((p) => !ONLY || ONLY.has(p.name));
  expect(specs.length, `no path named in ESSH_REPLAY_PATHS (${[...(ONLY ?? [])]})`).toBeGreaterThan(0);
  // Never overwrite: a fixture, once committed, stands for histories that may still be live.
  const clashes = specs.flatMap((p) => [`${PREFIX}-${p.name}.json`, `${PREFIX}-${p.name}-run1.json`]).filter((f) => existsSync(path.join(HISTORIES_DIR, f)));
  expect(clashes, 'fixtures already exist: use a new prefix, or delete them yourself if they were never committed').toEqual([]);

  const settled = await Promise.allSettled(specs.map((p) => record(p)));
  const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [`${specs[i]!.name}: ${(s.reason as Error)?.stack ?? s.reason}`] : []));
  const recorded = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));

  const { stdout: commit } = await run('git', ['rev-parse', 'HEAD'], { cwd: REPO });
  const { stdout: temporalVersion } = await run(toolPath('temporal'), ['--version']);
  const sdkVersion = JSON.parse(await readFile(path.join(REPO, 'node_modules/@temporalio/worker/package.json'), 'utf8')).version;
  const manifest = {
    prefix: PREFIX,
    recorded_at: new Date().toISOString(),
    commit: commit.trim(),
    temporal_cli: temporalVersion.trim(),
    temporal_sdk: sdkVersion,
    recorder: 'test/replay/record-histories.ts',
    history_json: historyJsonVia(),
    fixtures: [] as object[],
  };
  for (const r of recorded) {
    const names = fileNames(r);
    for (const [i, run] of r.runs.entries()) {
      const json = historyToJSON(run.history);
      // What we write must load back into the same history.
      expect(historyToJSON(historyFromJSON(JSON.parse(json))), `${names[i]}: round trip`).toBe(json);
      await writeFile(path.join(HISTORIES_DIR, names[i]!), json + '\n');
      manifest.fixtures.push({
        file: names[i], path: r.path, run: i + 1, runs: r.runs.length, events: run.history.events?.length,
        end_reason: i === r.runs.length - 1 ? r.result.end_reason : null, exit_code: i === r.runs.length - 1 ? r.result.exit_code : null,
        workflow_id: r.workflowId, run_id: run.runId, description: r.description,
      });
    }
  }
  // Same JSON as the temporal CLI's: compare one fixture with `temporal workflow show --output json`
  // (as JSON values: the two may order the keys of proto maps, such as payload metadata, differently).
  const sample = recorded.find((r) => r.path === 'disconnect-signal') ?? recorded[0];
  if (sample) {
    const on = sample.on;
    const { stdout } = await run(toolPath('temporal'), [
      'workflow', 'show', '--address', on.config.temporal.address!, '--namespace', on.namespace,
      '--workflow-id', sample.workflowId, '--run-id', sample.runs[0]!.runId, '--output', 'json',
    ], { maxBuffer: 64 * 1024 * 1024 });
    const ours = JSON.parse(historyToJSON(sample.runs[0]!.history));
    const cli = JSON.parse(stdout);
    const same = (a: unknown, b: unknown) => { try { expect(a).toEqual(b); return true; } catch { return false; } };
    const verdict = same(cli, ours) ? 'identical' : same(JSON.parse(historyToJSON(historyFromJSON(cli))), ours) ? 'equivalent after historyFromJSON' : 'different';
    Object.assign(manifest, { cli_json_check: `${fileNames(sample)[0]} vs temporal workflow show --output json: ${verdict}` });
    expect(verdict, `${fileNames(sample)[0]} differs from the temporal CLI's JSON of the same run`).not.toBe('different');
  }
  const manifestFile = path.join(HISTORIES_DIR, `${PREFIX}.manifest.json`);
  const previous = existsSync(manifestFile) ? (JSON.parse(await readFile(manifestFile, 'utf8')) as { recordings?: object[] }) : null;
  await writeFile(manifestFile, JSON.stringify({ recordings: [...(previous?.recordings ?? []), manifest] }, null, 2) + '\n');
  console.info(
    `recorded ${manifest.fixtures.length} fixture files for ${recorded.length} paths in ${((Date.now() - started) / 1000).toFixed(1)} s:\n` +
      recorded.map((r) => `  ${fileNames(r).join(', ')}  (${r.result.end_reason}${r.result.exit_code !== null ? `/${r.result.exit_code}` : ''})`).join('\n'),
  );
  expect(failed, 'paths that could not be recorded').toEqual([]);
}, 600_000);
