// Live sessions at a small scale, with their SSH clients in a process of their own (bench/live-fleet.ts;
// `npm run bench -- live-sessions` is the large version, docs/scale.md has its figures):
// - 30 sessions attached for 40 s at 5× the portal's default heartbeat rate: no false disconnect;
// - the worker that runs the session workflows is SIGKILLed and started again while every client stays:
//   N replays at once, with every heartbeat timer overdue, and no session ends;
// - the Temporal server itself is stopped for longer than the heartbeat timeout and started again: the
//   portal's heartbeats could not arrive meanwhile, yet no session whose client stayed ends.
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { startDevServer, type DevServer } from '../stack/temporal-dev.js';
import { startClientFleet, type ClientFleet } from '../bench/live-fleet.js';
import { createTenant, endAllSessions, sleep, startTestStack, waitFor, type TestStack } from './harness.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

// The portal's default rhythm is 10 s in 30 s; here 2 s in 8 s, so that 30 sessions signal as often as
// 150 would by default, and 40 s cross the heartbeat timeout five times.
const HEARTBEAT_S = 2;
const TIMEOUT_S = 8;
const env = { ESSH_PORTAL_HEARTBEAT_S: String(HEARTBEAT_S), ESSH_HEARTBEAT_TIMEOUT_S: String(TIMEOUT_S) };

interface Opened {
  id: number;
}

/** Creates `n` sessions and attaches a client of the fleet to each, a few at a time. */
async function openSessions(stack: TestStack, fleet: ClientFleet, n: number): Promise<Opened[]> {
  const t = await createTenant(stack, { plan: 'enterprise' });
  const opened: Opened[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < n) {
      next++;
      const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
      if (r.status !== 201) throw new Error(`creating a session: ${r.status} ${JSON.stringify(r.body)}`);
      await fleet.attach(r.body.id, r.body.connect);
      opened.push({ id: r.body.id });
    }
  }));
  return opened;
}

/** Every session that is not `active` any more, with why; and the clients the portal let go unasked. */
async function casualties(stack: TestStack, fleet: ClientFleet, sessions: Opened[]) {
  const rows = await stack.runtime.db.selectFrom('operations').select(['id', 'state', 'end_reason', 'end_message'])
    .where('id', 'in', sessions.map((s) => s.id)).execute();
  const ended = rows.filter((r) => r.state !== 'active').map((r) => `session ${r.id}: ${r.state} ${r.end_reason ?? ''} (${r.end_message ?? ''})`);
  const closed = fleet.unexpectedCloses.map((c) => `client of session ${c.id} let go: ${c.stderr.trim()}`);
  return [...ended, ...closed];
}

describe('30 live sessions, their clients in another process', () => {
  const SESSIONS = 30;
  const HOLD_S = 40;
  let stack: TestStack;
  let worker: WorkerProcess | undefined;
  let fleet: ClientFleet;
  let sessions: Opened[] = [];

  beforeAll(async () => {
    // The API, the portal and the host here; the session workflows in a worker process of their own,
    // which the second test kills.
    stack = await startTestStack({ parts: { api: true, portal: true, hostStacks: ['local'] }, env });
    worker = await startWorkerProcess(stack, { ESSH_WORKER_ROLES: 'main' });
    fleet = await startClientFleet();
  }, 180_000);
  afterAll(async () => {
    await fleet?.close().catch(() => undefined);
    await fleet?.stop();
    if (stack) await endAllSessions(stack).catch(() => undefined);
    await worker?.stop();
    await stack?.stop();
  });

  it(`${SESSIONS} sessions held ${HOLD_S} s with heartbeats every ${HEARTBEAT_S} s: no false disconnect`, async () => {
    sessions = await openSessions(stack, fleet, SESSIONS);
    expect((await fleet.open()).length).toBe(SESSIONS);
    await sleep(HOLD_S * 1000);
    expect(await casualties(stack, fleet, sessions)).toEqual([]);
    expect((await fleet.open()).length).toBe(SESSIONS);
  }, 180_000);

  it('the workflow worker SIGKILLed and started again after every heartbeat timer is overdue: no session ends', async () => {
    expect(sessions.length).toBe(SESSIONS);
    await worker!.kill('SIGKILL');
    // Longer than the heartbeat timeout: every session's timer fires with no worker to see it.
    await sleep((TIMEOUT_S + 2) * 1000);
    worker = await startWorkerProcess(stack, { ESSH_WORKER_ROLES: 'main' });
    await sleep(2 * TIMEOUT_S * 1000);
    expect(await casualties(stack, fleet, sessions)).toEqual([]);
    // The new worker does keep them: a client that leaves ends its session as it should.
    const [first] = sessions;
    await fleet.close([first!.id]);
    await waitFor('the session whose client left to end', async () => {
      const r = await stack.runtime.db.selectFrom('operations').select(['state', 'end_reason']).where('id', '=', first!.id).executeTakeFirstOrThrow();
      return r.state === 'ended' && r.end_reason === 'disconnect';
    }, 30_000);
  }, 120_000);
});

describe('the Temporal server stopped for longer than the heartbeat timeout, and started again', () => {
  const SESSIONS = 10;
  let dir: string;
  let server: DevServer | undefined;
  let serverOpts: Parameters<typeof startDevServer>[0];
  let stack: TestStack;
  let fleet: ClientFleet;

  beforeAll(async () => {
    // A server of this file's own, on a database file, so that it can stop and come back as it was.
    dir = await mkdtemp(path.join(os.tmpdir(), 'essh-temporal-'));
    serverOpts = { binary: toolPath('temporal'), dataDir: dir, port: await freePort(), uiPort: await freePort(), namespace: 'default' };
    server = await startDevServer(serverOpts);
    stack = await startTestStack({ temporalAddress: server.address, env });
    fleet = await startClientFleet();
  }, 180_000);
  afterAll(async () => {
    await fleet?.close().catch(() => undefined);
    await fleet?.stop();
    if (stack) await endAllSessions(stack).catch(() => undefined);
    await stack?.stop();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('no session whose client stayed attached ends', async () => {
    const sessions = await openSessions(stack, fleet, SESSIONS);
    await sleep(HEARTBEAT_S * 2 * 1000);
    await server!.stop();
    server = undefined;
    // The portal's heartbeats fail meanwhile; every heartbeat timer is overdue when the server is back.
    await sleep((TIMEOUT_S + 4) * 1000);
    server = await startDevServer(serverOpts);
    await sleep(3 * TIMEOUT_S * 1000);
    expect(await casualties(stack, fleet, sessions)).toEqual([]);
    expect((await fleet.open()).length).toBe(SESSIONS);
  }, 150_000);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
