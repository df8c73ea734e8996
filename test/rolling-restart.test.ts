// Rolling restarts of the stateless roles (issue 19 §3): two `api` replicas behind Debian's nginx running
// the shipped deploy/nginx/essh-api.conf, and two `worker` replicas, each a real process of
// server/main.ts. While clients create, read and terminate sessions through the proxy without pause,
// each replica in turn is sent SIGTERM, exits, and is started again (what `systemctl restart` does, one
// unit at a time). No request fails, every session created meanwhile comes up and ends as asked, and no
// session workflow's history holds a failed or timed-out workflow task.
import http from 'node:http';
import https from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freeLoopbackPort } from '../lib/free-port.js';
import { sessionWorkflowId } from '../shapes/session-workflow.js';
import { createTenant, endAllSessions, sleep, useTestStack, waitFor } from './support/harness.js';
import { makeCertificates, request, startNginx, type Nginx } from './support/nginx.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

/** @temporalio/worker's default number of concurrent workflow-task polls (worker-options: maxWFTPolls), which essh does not change. */
const SDK_WORKFLOW_TASK_POLLERS = 10;

const stack = useTestStack({ parts: { api: true, hostStacks: ['local'], portal: true } });
let dir: string;
let nginx: Nginx | undefined;
let ca: string;
const apiPorts: number[] = [];
const apis: WorkerProcess[] = [];
const workers: WorkerProcess[] = [];

/** Every replica process started, by pid: the output of the one a failure names goes in its message. */
const replicas = new Map<number, WorkerProcess>();

async function startReplica(role: 'api' | 'worker', apiPort?: number) {
  const p = await startReplicaProcess(role, apiPort);
  replicas.set(p.pid, p);
  return p;
}

function startReplicaProcess(role: 'api' | 'worker', apiPort?: number) {
  return startWorkerProcess(stack, {
    ...(apiPort ? { ESSH_API_PORT: String(apiPort), ESSH_API_HOST: '127.0.0.1' } : {}),
    ESSH_SESSION_CREATE_RATE: '0',
    ESSH_TRUST_PROXY: '127.0.0.1',
  }, { args: ['--import', 'tsx', 'server/main.ts', '--role', role], readyWhen: 'essh server ready' });
}

/**
 * A request to replica `port` itself that is still arriving when `during` runs: its headers and half its
 * body first, the rest a second after. Resolves with the answer.
 */
async function requestSpanning(port: number, token: string, p: string, body: unknown, during: () => void) {
  const text = JSON.stringify(body);
  return new Promise<{ status: number; connection?: string; body: string }>((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: p, method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
    }, (res) => {
      let answer = '';
      res.on('data', (c: Buffer) => (answer += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: answer }));
    });
    req.once('error', reject);
    req.write(text.slice(0, 1));
    // The request is the server's once its headers are parsed; then the signal, then the rest of the body.
    req.once('socket', (socket) => socket.once('connect', () => setTimeout(() => {
      during();
      setTimeout(() => req.end(text.slice(1)), 1000);
    }, 300)));
  });
}

/** When each replica got its signal, exited and was back: for the message of a failure. */
const timeline: string[] = [];
/** Each worker replica restarted, by pid: when it got SIGTERM and when it had exited (ms since the epoch). */
const stopped = new Map<number, { sigterm: number; exited: number }>();

/**
 * SIGTERM, then the exit (its drain included), then the same replica again: one unit's restart. An API
 * replica gets the signal while a request to it is still arriving (`inFlight`): it must answer it in full.
 */
async function restart(list: WorkerProcess[], i: number, role: 'api' | 'worker', inFlight?: { token: string; app: string; answers: string[] }) {
  const old = list[i]!;
  timeline.push(`${new Date().toISOString()} SIGTERM ${role} ${i} (pid ${old.pid})`);
  if (role === 'api' && inFlight) {
    const r = await requestSpanning(apiPorts[i]!, inFlight.token, `/apps/${inFlight.app}/sessions`, { command: ['true'] }, () => old.signal('SIGTERM'));
    inFlight.answers.push(`${r.status} connection: ${r.connection}`);
  } else {
    old.signal('SIGTERM');
  }
  const sigterm = Date.now();
  const code = await old.exited;
  expect(code, `the ${role} replica's exit after SIGTERM:\n${old.output().slice(-2000)}`).toBe(0);
  if (role === 'worker') stopped.set(old.pid, { sigterm, exited: Date.now() });
  timeline.push(`${new Date().toISOString()} exited ${role} ${i} (pid ${old.pid})`);
  list[i] = await startReplica(role, role === 'api' ? apiPorts[i] : undefined);
  timeline.push(`${new Date().toISOString()} ready ${role} ${i} (pid ${list[i]!.pid})`);
  // The runbook's pause (docs/deploy.md): nginx leaves a replica that refused a connection out for its
  // fail_timeout (2 s, counted on nginx's whole-second clock), so the next one is restarted only once
  // this one is back in.
  if (role === 'api') await sleep(NGINX_FAIL_TIMEOUT_MS + 1000);
}
const NGINX_FAIL_TIMEOUT_MS = 2000;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-rolling-'));
  // This process: the host (portal, host worker) and an API of its own for the test's set-up calls only.
  const caFile = await makeCertificates(dir);
  for (let i = 0; i < 2; i++) apiPorts.push(await freeLoopbackPort());
  const started = await Promise.all([
    ...apiPorts.map((p) => startReplica('api', p)),
    startReplica('worker'), startReplica('worker'),
  ]);
  apis.push(started[0]!, started[1]!);
  workers.push(started[2]!, started[3]!);
  nginx = await startNginx(dir, { port: await freeLoopbackPort(), apiPorts, ca: caFile });
  ca = (await import('node:fs')).readFileSync(caFile, 'utf8');
}, 240_000);
afterAll(async () => {
  await nginx?.stop();
  if (stack) await endAllSessions(stack).catch(() => undefined);
  await Promise.all([...apis, ...workers].map((p) => p.stop().catch(() => undefined)));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('api and worker replicas restarted one at a time behind nginx', () => {
  it('no request fails, every session comes up and ends as asked, no workflow task fails', async () => {
    const t = await createTenant(stack, { plan: 'enterprise' });
    const agent = new https.Agent({ keepAlive: true, ca });
    const failures: string[] = [];
    let answered = 0;
    const call = async (method: string, p: string, body?: unknown) => {
      try {
        const r = await request(`${nginx!.url}${p}`, {
          method, agent,
          headers: { authorization: `Bearer ${t.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
        answered++;
        return { status: r.status, body: r.body ? JSON.parse(r.body) : undefined };
      } catch (err) {
        failures.push(`${method} ${p}: ${(err as Error).message}`);
        return { status: 0, body: undefined };
      }
    };
    const sessions: number[] = [];
    let restarting = true;
    /** A client's loop: a session created, read until its container is up, terminated, read until it ended. */
    const client = async () => {
      while (restarting) {
        const created = await call('POST', `/apps/${t.app}/sessions`, {});
        if (created.status !== 201) {
          if (created.status) failures.push(`POST /apps/${t.app}/sessions: ${created.status} ${JSON.stringify(created.body)}`);
          continue;
        }
        const id = created.body.id as number;
        sessions.push(id);
        const until = async (what: string, ok: (s: any) => boolean) => {
          for (const started = Date.now(); Date.now() - started < 120_000; await sleep(200)) {
            const r = await call('GET', `/sessions/${id}`);
            if (r.status !== 200) {
              if (r.status) failures.push(`GET /sessions/${id}: ${r.status} ${JSON.stringify(r.body)}`);
              continue;
            }
            if (ok(r.body)) return;
          }
          failures.push(`session ${id} not ${what} within 120 s`);
        };
        await until('waiting for its client', (s) => s.state === 'waiting_for_client');
        const ended = await call('POST', `/sessions/${id}/terminate`, { reason: 'rolling restart test' });
        if (ended.status !== 202 && ended.status !== 200) failures.push(`terminate ${id}: ${ended.status} ${JSON.stringify(ended.body)}`);
        await until('ended', (s) => s.state === 'ended');
      }
    };
    const clients = [client(), client(), client()];
    await waitFor('sessions under way before the first restart', async () => sessions.length >= 3, 120_000);
    const inFlight = { token: t.token, app: t.app, answers: [] as string[] };
    await restart(apis, 0, 'api', inFlight);
    await restart(apis, 1, 'api', inFlight);
    await restart(workers, 0, 'worker');
    await restart(workers, 1, 'worker');
    restarting = false;
    await Promise.all(clients);
    agent.destroy();

    expect(failures, `nginx's error log:\n${await nginx!.errorLog()}`).toEqual([]);
    // Each replica answered the request it was receiving when its SIGTERM came, and closed that connection.
    expect(inFlight.answers).toEqual(['201 connection: close', '201 connection: close']);
    expect(sessions.length).toBeGreaterThanOrEqual(6);
    console.log(`rolling restart: ${answered} requests answered through nginx, ${sessions.length} sessions, 4 replicas restarted`);

    const rows = await stack.runtime.db.selectFrom('operations').select(['id', 'state', 'end_reason']).where('id', 'in', sessions).execute();
    expect(rows.filter((r) => r.state !== 'ended' || r.end_reason !== 'terminated')).toEqual([]);
    const troubled: string[] = [];
    const lostAtShutdown: string[] = [];
    for (const id of sessions) {
      const history = await stack.runtime.client.workflow.getHandle(sessionWorkflowId(id)).fetchHistory();
      for (const e of history.events ?? []) {
        if (e.workflowTaskFailedEventAttributes || e.workflowTaskTimedOutEventAttributes || e.activityTaskFailedEventAttributes) {
          const started = history.events?.find((x) => String(x.eventId) === String(e.workflowTaskTimedOutEventAttributes?.startedEventId));
          const startedAt = started ? Number(started.eventTime?.seconds ?? 0) * 1000 + Math.floor((started.eventTime?.nanos ?? 0) / 1e6) : undefined;
          const identity = started?.workflowTaskStartedEventAttributes?.identity ?? '';
          const line = `session ${id}: event ${e.eventId} ${e.eventType} ${JSON.stringify(e.workflowTaskTimedOutEventAttributes ?? e.workflowTaskFailedEventAttributes ?? e.activityTaskFailedEventAttributes)}` +
            (startedAt !== undefined ? ` (task started ${new Date(startedAt).toISOString()} by ${identity})` : '');
          // The SDK's own shutdown race (docs/deploy.md, "Rolling restarts"): a task the server hands a
          // stopping replica's last poll after the SDK has declared its workflows shut down is dropped and
          // times out. Told apart by who took it and when: the replica being stopped, between its SIGTERM
          // (less the time a poll's answer spends on the way) and its exit.
          const dying = stopped.get(Number(identity.split('@')[0]));
          const lost = e.workflowTaskTimedOutEventAttributes && startedAt !== undefined && dying &&
            startedAt >= dying.sigterm - 1000 && startedAt <= dying.exited;
          (lost ? lostAtShutdown : troubled).push(line);
        }
      }
    }
    const outputOf = (line: string) => {
      const pid = Number(/by (\d+)@/.exec(line)?.[1]);
      return replicas.has(pid) ? `\nthe output of ${pid}, its end:\n${replicas.get(pid)!.output().slice(-3000)}` : '';
    };
    expect(troubled, `the replicas:\n${timeline.join('\n')}${troubled.map(outputOf).join('')}`).toEqual([]);
    if (lostAtShutdown.length) console.log(`rolling restart: workflow tasks lost to the SDK's shutdown race (retried after their 10 s timeout):\n${lostAtShutdown.join('\n')}`);
    // Each lost task stalls one session for 10 s. The race can lose at most the tasks that the replica's
    // outstanding polls bring back: one per workflow-task poller (the SDK's default, 10, which essh
    // keeps). One replica lost two in a clean-clone run on PostgreSQL (load 7), so one per replica was
    // an observation, not the race's bound.
    expect(lostAtShutdown.length, lostAtShutdown.join('\n')).toBeLessThanOrEqual(stopped.size * SDK_WORKFLOW_TASK_POLLERS);
  }, 600_000);
});
