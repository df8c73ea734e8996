// Live sessions at a small scale, with their SSH clients in a process of their own (bench/live-fleet.ts;
// `npm run bench -- live-sessions` is the large version, docs/scale.md has its figures):
// - 30 sessions attached for 40 s at 5× the portal's default heartbeat rate: no false disconnect;
// - the worker that runs the session workflows is SIGKILLed and started again while every client stays:
//   N replays at once, with every heartbeat timer overdue, and no session ends;
// - the Temporal server itself is stopped for longer than the heartbeat timeout and started again: the
//   portal's heartbeats could not arrive meanwhile, yet no session whose client stayed ends;
// - the process that runs the portal (and the host worker) is SIGKILLed and started again: every client
//   loses its connection and reattaches with its session owner's key within the heartbeat timeout, and
//   no session ends.
import { readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { startDevServer, type DevServer } from '../server/temporal-dev.js';
import type { ClientFleet } from '../bench/live-fleet.js';
import { useClientFleet } from './support/client-fleet.js';
import { createTenant, endAllSessions, endSessionsAndStop, sleep, startTestStack, useTestStack, waitFor, whatSessionWaitsFor, type TestStack } from './support/harness.js';
import { generateKey, registerKey } from './support/portal-terminal.js';
import { startWorkerProcess, useStackWithHostProcess, type WorkerProcess } from './support/worker-process.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';

// The portal's default rhythm is 10 s in 30 s; here 2 s in 8 s, so that 30 sessions signal as often as
// 150 would by default, and 40 s cross the heartbeat timeout five times.
const HEARTBEAT_S = 2;
const TIMEOUT_S = 8;
const env = { ESSH_PORTAL_HEARTBEAT_S: String(HEARTBEAT_S), ESSH_HEARTBEAT_TIMEOUT_S: String(TIMEOUT_S) };

interface Opened {
  id: number;
}

/**
 * Creates `n` sessions and attaches a client of the fleet to each, a few at a time; with `reattach`,
 * as the tenant `t`'s member whose key that is, each client reattaching on a lost connection.
 */
async function openSessions(
  stack: TestStack, fleet: ClientFleet, n: number,
  opts: {
    tenant?: Awaited<ReturnType<typeof createTenant>>; reattach?: { privateKey: string; withinMs: number };
    /** The process running the portal, when it is not this one: its output goes with a failed attach. */
    portalProcess?: WorkerProcess;
  } = {},
): Promise<Opened[]> {
  const t = opts.tenant ?? (await createTenant(stack, { plan: 'enterprise' }));
  const opened: Opened[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < n) {
      next++;
      const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
      if (r.status !== 201) throw new Error(`creating a session: ${r.status} ${JSON.stringify(r.body)}`);
      await fleet.attach(r.body.id, r.body.connect, opts.reattach).catch(async (err: Error) => {
        // The client's side of the wait says where it was; the record says how far the workflow got.
        const row = await stack.runtime.db.selectFrom('operations').select(['state', 'container_id', 'end_reason', 'end_message'])
          .where('id', '=', r.body.id).executeTakeFirst();
        throw new Error(`attaching a client to session ${r.body.id} (${opened.length} of ${n} attached so far): ${err.message}\n` +
          `its record: ${row ? `state ${row.state}, ${row.container_id ? `container ${row.container_id.slice(0, 12)}` : 'no container yet'}` +
            `${row.end_reason ? `, ended ${row.end_reason} (${row.end_message ?? ''})` : ''}` : 'not found'}` +
          (opts.portalProcess ? `\nthe portal's process said:\n${opts.portalProcess.output().slice(-3000)}` : ''));
      });
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
  const closed = fleet.unexpectedCloses.filter((c) => sessions.some((s) => s.id === c.id)).map((c) => `client of session ${c.id} let go: ${c.stderr.trim()}`);
  return [...ended, ...closed];
}

describe('30 live sessions, their clients in another process', () => {
  const SESSIONS = 30;
  const HOLD_S = 40;
  // The API, the portal and the host here; the session workflows in a worker process of their own,
  // which the second test kills.
  const stack = useTestStack({ parts: { api: true, portal: true, hostStacks: ['local'] }, env }, { endSessions: false });
  let worker: WorkerProcess | undefined;
  let sessions: Opened[] = [];

  beforeAll(async () => {
    worker = await startWorkerProcess(stack, { ESSH_WORKER_ROLES: 'main' });
  }, 180_000);
  afterAll(() => endSessionsAndStop(stack, [worker]));
  const fleet = useClientFleet();

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
    // (Decided by the workflow once it is `ending`; its container's removal follows, at the pace of a
    // loaded engine: CI once needed more than 30 s for both.)
    let state = 'unknown';
    await waitFor('the session whose client left to end', async () => {
      const r = await stack.runtime.db.selectFrom('operations').select(['state', 'end_reason']).where('id', '=', first!.id).executeTakeFirstOrThrow();
      state = `${r.state} ${r.end_reason ?? ''}`;
      return (r.state === 'ending' || r.state === 'ended') && r.end_reason === 'disconnect';
    }, 60_000).catch(async (err) => {
      throw new Error(`${(err as Error).message}: ${await whatSessionWaitsFor(stack, first!.id, state)}`);
    });
  }, 120_000);
});

describe('the Temporal server stopped for longer than the heartbeat timeout, and started again', () => {
  const SESSIONS = 10;
  let dir: string;
  let server: DevServer | undefined;
  let serverOpts: Parameters<typeof startDevServer>[0];
  let stack: TestStack;

  beforeAll(async () => {
    // A server of this file's own, on a database file, so that it can stop and come back as it was.
    dir = await mkdtemp(path.join(os.tmpdir(), 'essh-temporal-'));
    server = await startDevServer({ binary: toolPath('temporal'), dataDir: dir, namespace: 'default' });
    // Started again where the stack expects it.
    serverOpts = { binary: toolPath('temporal'), dataDir: dir, port: server.port, uiPort: server.uiPort, namespace: 'default' };
    // Its own start (not useTestStack): the server comes first, and goes after the stack has stopped.
    stack = await startTestStack({ temporalAddress: server.address, env });
  }, 180_000);
  afterAll(async () => {
    if (stack) await endAllSessions(stack).catch(() => undefined);
    await stack?.stop();
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const fleet = useClientFleet();

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

describe('the portal\'s process SIGKILLed and started again: every client reattaches with its owner\'s key', () => {
  const SESSIONS = 30;
  // Longer than the file's 8 s: the killed process has to start again (a few seconds) and 30 clients
  // come back through it before the workflows take them for gone.
  const REATTACH_TIMEOUT_S = 20;
  // The new portal keeps the sessions of the clients its predecessor had for this long (the
  // reattach window, portal/reattach-window.ts): longer than the heartbeat timeout, so that it shows.
  const REATTACH_WINDOW_S = 45;
  // The API and the session workflows here; the portal and the host worker (ESSH_WORKER_ROLES=host)
  // in a process of their own, on a fixed port so that the `connect` blocks hold across its restart.
  const hosted = useStackWithHostProcess({
    idPrefix: 'portal-restart',
    env: { ESSH_PORTAL_HEARTBEAT_S: String(HEARTBEAT_S), ESSH_HEARTBEAT_TIMEOUT_S: String(REATTACH_TIMEOUT_S) },
    hostExtra: async () => ({ ESSH_SSH_PORT: String(await freePort()), ESSH_REATTACH_WINDOW_S: String(REATTACH_WINDOW_S) }),
  });
  const stack = hosted.stack;
  const fleet = useClientFleet();

  it(`${SESSIONS} clients reattach within the heartbeat timeout (${REATTACH_TIMEOUT_S} s); no session ends; one that leaves then ends its session`, async () => {
    const t = await createTenant(stack, { plan: 'enterprise' });
    const key = await generateKey(stack.dataDir, 'reattach');
    await registerKey(stack, t.token, t.user.id, key.keyFile);
    const sessions = await openSessions(stack, fleet, SESSIONS, { tenant: t, reattach: { privateKey: await readFile(key.keyFile, 'utf8'), withinMs: REATTACH_TIMEOUT_S * 1000 }, portalProcess: hosted.host });
    // And one whose client will not come back: its session lasts as long as the reattach window.
    const [stayAway] = await openSessions(stack, fleet, 1, { tenant: t, portalProcess: hosted.host });
    expect((await fleet.open()).length).toBe(SESSIONS + 1);
    // Every session `active`, its heartbeats flowing, before the kill.
    await sleep(2 * HEARTBEAT_S * 1000);
    expect(await casualties(stack, fleet, sessions)).toEqual([]);
    // The portal noted on the host's disk which connection each client is on: the process that takes
    // over reads these instead of asking each workflow (portal/attached-notes.ts).
    const noted = () => readdirSync(path.join(stack.dataDir, 'attached')).map(Number).filter((id) => sessions.some((s) => s.id === id)).sort();
    expect(noted()).toEqual(sessions.map((s) => s.id).sort());
    expect(readdirSync(path.join(stack.dataDir, 'attached'))).toContain(String(stayAway!.id));
    // One a crash left for a session that has ended since: the next start sweeps it.
    const stray = path.join(stack.dataDir, 'attached', '999999999999');
    writeFileSync(stray, `portal-0badb007-000000000000@${hosted.hostEnv.ESSH_HOST_ID}`);

    const killedAt = Date.now();
    await hosted.host!.kill('SIGKILL');
    await hosted.restartHost();
    const upS = (Date.now() - killedAt) / 1000;
    expect(readdirSync(path.dirname(stray))).not.toContain(path.basename(stray));
    const ids = sessions.map((s) => s.id).sort();
    // A reattach counts once its client has its program's prompt again (a new `docker exec` in the
    // same container); a refused one is reported as a close.
    await waitFor('every client to reattach', async () =>
      fleet.unexpectedCloses.some((c) => c.id !== stayAway!.id) || new Set(fleet.reattaches.map((r) => r.id)).size === SESSIONS, REATTACH_TIMEOUT_S * 1000, 100)
      .catch(() => undefined);
    const where = () => `host back after ${upS.toFixed(1)} s; reattached: ` +
      fleet.reattaches.map((r) => `${r.id} at ${((r.at - killedAt) / 1000).toFixed(1)} s (${r.attempts})`).join(', ') +
      `\nthe host process said:\n${hosted.host!.output().slice(-3000)}`;
    expect(await casualties(stack, fleet, sessions), where()).toEqual([]);
    expect([...new Set(fleet.losses.map((l) => l.id))].sort()).toEqual(ids);
    expect([...new Set(fleet.reattaches.map((r) => r.id))].sort()).toEqual(ids);
    const after = fleet.reattaches.map((r) => r.at - killedAt).sort((a, b) => a - b);
    console.info(
      `portal restart: the host process was back ${upS.toFixed(1)} s after the kill; ${SESSIONS} clients reattached ` +
        `${(after[0]! / 1000).toFixed(1)}–${(after.at(-1)! / 1000).toFixed(1)} s after it ` +
        `(${fleet.reattaches.reduce((a, r) => a + r.attempts, 0)} connections in all)`,
    );
    expect(after.at(-1)!).toBeLessThan(REATTACH_TIMEOUT_S * 1000);
    expect((await fleet.open()).length).toBe(SESSIONS);

    // Twice the heartbeat timeout on the reattached connections: nothing ends, nobody is let go.
    await sleep(2 * REATTACH_TIMEOUT_S * 1000);
    expect(await casualties(stack, fleet, sessions)).toEqual([]);
    expect((await fleet.open()).length).toBe(SESSIONS);

    // The session whose client stayed away outlived the heartbeat timeout, and ended when the window
    // closed, saying so.
    const strayEnd = await waitFor('the session whose client stayed away to end', async () => {
      const r = await stack.runtime.db.selectFrom('operations').select(['state', 'end_reason', 'end_message', 'ended_at']).where('id', '=', stayAway!.id).executeTakeFirstOrThrow();
      return r.state === 'ended' ? r : undefined;
    }, (REATTACH_WINDOW_S + REATTACH_TIMEOUT_S) * 1000);
    expect(strayEnd).toMatchObject({ end_reason: 'disconnect', end_message: `its client did not come back within ${REATTACH_WINDOW_S} s of its portal's restart` });
    expect(Date.parse(strayEnd.ended_at!) - killedAt).toBeGreaterThan(REATTACH_TIMEOUT_S * 1000);

    // A client that leaves now ends its session at once, by the portal's clientDisconnected for the
    // reattached connection (not a heartbeat timeout, whose message would say so).
    const [first] = sessions;
    const leftAt = Date.now();
    await fleet.close([first!.id]);
    const ended = await waitFor('the session whose client left to end', async () => {
      const r = await stack.runtime.db.selectFrom('operations').select(['state', 'end_reason', 'end_message']).where('id', '=', first!.id).executeTakeFirstOrThrow();
      return r.state === 'ended' ? r : undefined;
    }, 3 * REATTACH_TIMEOUT_S * 1000);
    expect(ended).toMatchObject({ end_reason: 'disconnect', end_message: 'the client closed the connection' });
    expect(Date.now() - leftAt).toBeLessThan(REATTACH_TIMEOUT_S * 1000);
    expect(await casualties(stack, fleet, sessions.slice(1))).toEqual([]);
    // Its note went with it; the others' stay, now naming the new process's connections.
    expect(noted()).toEqual(sessions.slice(1).map((s) => s.id).sort());
  }, 300_000);
});

