import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { observeQueries } from '../lib/db.js';
import { formatTable } from './stats.js';
import { sessionWorkflowId } from '../shapes/session-workflow.js';
import type { PortalTarget } from '../cli/portal-client.js';
import { apiCall, apiOk, endSessions, sessionState, sleep, waitForState } from './api-client.js';
import { chainEvents, mapLimit, windowStats, type WindowStats } from './histories.js';
import { startClientFleet, type ClientFleet } from './live-fleet.js';
import { registeredKey } from './openssh.js';
import {
  containerMemory, cpuSeconds, memoryOf, memoryOfAll, pidOf, shimPids, temporalServerPid,
} from './proc.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const SIZES = (process.env.ESSH_BENCH_LIVE_N ?? '100,250,500').split(',').map((n) => Number(n.trim())).filter((n) => n > 0);
const STEADY_S = Number(process.env.ESSH_BENCH_LIVE_S ?? 300);
const RAMP_PARALLEL = Number(process.env.ESSH_BENCH_LIVE_RAMP_PARALLEL ?? 8);
const PROBE_EVERY_MS = Number(process.env.ESSH_BENCH_LIVE_CREATE_EVERY_MS ?? 3000);
const ECHO_EVERY_MS = 50;
/** Seconds with the N sessions live and nothing else going on, for the database's share of them. */
const QUIET_S = 30;
/** ESSH_BENCH_LIVE_RESTART=1 (with ESSH_BENCH_SPLIT_MAIN=1): after the largest size's window, the main worker is killed and started again. */
const RESTART = process.env.ESSH_BENCH_LIVE_RESTART === '1';
const AFTER_RESTART_S = Number(process.env.ESSH_BENCH_LIVE_AFTER_RESTART_S ?? 120);
/**
 * ESSH_BENCH_LIVE_OUTAGE_S=S: after the largest size's window, the Temporal server is stopped (SIGSTOP)
 * for S seconds and let go on (SIGCONT), as an outage of the server or of the way to it would: the
 * portal's heartbeats cannot arrive meanwhile, and the heartbeat timers are overdue when it comes back.
 */
const OUTAGE_S = Number(process.env.ESSH_BENCH_LIVE_OUTAGE_S ?? 0);
/**
 * ESSH_BENCH_LIVE_PORTAL_RESTART=1 (with ESSH_BENCH_SPLIT_HOST=1): after the largest size's window, the
 * host process (its SSH portal) is SIGKILLed and started again: all N clients lose their connection at
 * once and reattach with their session owner's key, as users would, within the heartbeat timeout.
 */
const PORTAL_RESTART = process.env.ESSH_BENCH_LIVE_PORTAL_RESTART === '1';
const B = 'live-sessions';
/** ESSH_BENCH_LIVE_DUMP=DIR: every heartbeat's signal time and latency, and every echo, as JSON in DIR (for plots). */
const DUMP = process.env.ESSH_BENCH_LIVE_DUMP;
const MB = 1024 * 1024;

/**
 * The statements this process sends to the database, reads and writes apart, since the last take: what
 * one host's sessions ask of the central database. With the main worker in a process of its own
 * (ESSH_BENCH_SPLIT_MAIN=1) its activities' statements are not seen, so nothing is reported.
 */
const statements = (() => {
  let reads = 0;
  let writes = 0;
  const observed = process.env.ESSH_BENCH_SPLIT_MAIN !== '1' && process.env.ESSH_BENCH_SPLIT_HOST !== '1';
  if (observed) observeQueries((sql) => (/^\s*(insert|update|delete)/i.test(sql) ? writes++ : reads++));
  return {
    observed,
    take() {
      const r = { reads, writes };
      reads = 0;
      writes = 0;
      return r;
    },
  };
})();

interface Live {
  id: number;
  containerId: string;
}

interface Snapshot {
  at: number;
  runtime: { rss: number; heapUsed: number; cpu: number };
  temporal: { cpu: number; rss: number };
  dockerd: { rss: number; pss: number };
  containerd: { rss: number; pss: number };
  fleetCpu: number;
}

async function snapshot(ctx: BenchContext, pids: { temporal?: number; dockerd?: number; containerd?: number; fleet: number }): Promise<Snapshot> {
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  return {
    at: performance.now(),
    runtime: { rss: mem.rss, heapUsed: mem.heapUsed, cpu: (cpu.user + cpu.system) / 1e6 },
    temporal: pids.temporal ? { cpu: await cpuSeconds(pids.temporal), rss: (await memoryOf(pids.temporal)).rss } : { cpu: NaN, rss: NaN },
    dockerd: pids.dockerd ? await memoryOf(pids.dockerd) : { rss: NaN, pss: NaN },
    containerd: pids.containerd ? await memoryOf(pids.containerd) : { rss: NaN, pss: NaN },
    fleetCpu: await cpuSeconds(pids.fleet),
  };
}

type ReattachWith = { privateKey: string; withinMs: number };

/** Creates a session and attaches a client of the fleet to it; the create and the attach times. */
async function openOne(ctx: BenchContext, fleet: ClientFleet, app: string, token: string, reattach?: ReattachWith) {
  const t0 = performance.now();
  const r = await apiCall<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${app}/sessions`, token, {});
  const createMs = performance.now() - t0;
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
  try {
    await fleet.attach(r.body.id, r.body.connect, reattach);
  } catch (err) {
    // Where it stood: the record, and what the portal read from the program.
    const row = await sessionState(ctx, r.body.id);
    const read = ctx.runtime.portal?.attachmentStats().find((a) => a.sessionId === r.body.id);
    const handle = ctx.runtime.client.workflow.getHandle(sessionWorkflowId(r.body.id));
    const events = await handle.fetchHistory()
      .then((h) => (h.events ?? []).slice(-6).map((e) => `${e.eventTime?.seconds} ${String(e.eventType)}`).join(', '), (e) => String(e));
    // An activity still pending (Temporal writes its start only when it ends): which, how often tried, why it failed.
    const pending = await handle.describe().then((d) => (d.raw.pendingActivities ?? []).map((a) =>
      `${a.activityType?.name} state ${String(a.state)} attempt ${a.attempt}${a.lastFailure?.message ? ` last failure: ${a.lastFailure.message}` : ''}${a.lastWorkerIdentity ? ` on ${a.lastWorkerIdentity}` : ''}${a.heartbeatDetails?.payloads?.length ? ` last step ${Buffer.from(a.heartbeatDetails.payloads[0]!.data ?? []).toString('utf8')}` : ''}`,
    ).join('; '), (e) => String(e));
    ctx.progress(`${B}: session ${r.body.id}'s last events: ${events}; pending: ${pending || 'none'}`);
    throw Object.assign(
      new Error(`${(err as Error).message} (session ${r.body.id} is ${row?.state}; the portal has ${read ? `read ${read.bytesFromContainer} bytes from its program` : 'no attachment for it'}; ${((performance.now() - t0) / 1000).toFixed(1)} s after the create)`),
      { sessionId: r.body.id },
    );
  }
  return { id: r.body.id, createMs, attachedMs: performance.now() - t0 };
}

/**
 * While the live sessions run: a session created on another account every PROBE_EVERY_MS, timed to its
 * 201 and to its container (the record says waiting_for_client), then terminated.
 */
function createProbe(ctx: BenchContext, app: string, token: string) {
  const created: number[] = [];
  const ready: number[] = [];
  const failures: string[] = [];
  const ids = new Set<number>();
  let stopped = false;
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    while (!stopped) {
      const one = (async () => {
        const t0 = performance.now();
        const r = await apiCall(ctx, 'POST', `/apps/${app}/sessions`, token, {});
        if (r.status !== 201) {
          failures.push(`${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
          return;
        }
        created.push(performance.now() - t0);
        ids.add(r.body.id);
        await waitForState(ctx, r.body.id, ['waiting_for_client'], 120_000, 20);
        ready.push(performance.now() - t0);
        await apiCall(ctx, 'POST', `/sessions/${r.body.id}/terminate`, token, { reason: 'probe' });
      })().catch((err) => void failures.push(String((err as Error).message)));
      inFlight.add(one);
      void one.finally(() => inFlight.delete(one));
      await sleep(PROBE_EVERY_MS);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      await Promise.all(inFlight);
      return { created, ready, failures, ids };
    },
  };
}

async function runSize(ctx: BenchContext, n: number, restartAfter: boolean): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, unit: string, note?: string) => rows.push({ benchmark: B, metric: `N=${n} ${metric}`, value, unit, note });
  const tenant = await ctx.createTenant({ maxConcurrentSessions: n + 10 });
  const probeTenant = await ctx.createTenant({ maxConcurrentSessions: 20 });
  const fleet = await startClientFleet();
  const pids = {
    temporal: await temporalServerPid(ctx.temporalAddress),
    dockerd: await pidOf('dockerd'),
    containerd: await pidOf('containerd'),
    fleet: fleet.pid,
  };
  const live: Live[] = [];
  const probeIds = new Set<number>();
  // Before a portal restart the clients need a way back: their owner's key (the tokens are spent).
  let reattach: ReattachWith | undefined;
  if (restartAfter && PORTAL_RESTART) {
    const keyFile = await registeredKey(ctx, tenant.token, tenant.userId);
    // Past the reattach window (portal/reattach-window.ts) a reattach can only be refused (the session
    // ended): it is then reported.
    reattach = { privateKey: await readFile(keyFile, 'utf8'), withinMs: (Math.max(ctx.runtime.config.session.heartbeatTimeoutS, ctx.runtime.config.ssh.reattachWindowS) + 30) * 1000 };
  }
  try {
    global.gc?.();
    const before = await snapshot(ctx, pids);

    // --- ramp: N sessions, each with its client attached, RAMP_PARALLEL at a time --------------------
    const rampFailures: string[] = [];
    const rampStatements = statements.take();
    const rampStarted = performance.now();
    const rampCreate: number[] = [];
    const rampAttach: number[] = [];
    let opened = 0;
    await mapLimit(Array.from({ length: n }), RAMP_PARALLEL, async () => {
      let o: Awaited<ReturnType<typeof openOne>>;
      try {
        o = await openOne(ctx, fleet, tenant.app, tenant.token, reattach);
      } catch (err) {
        // A session that never reached its prompt is counted and ended; the others go on. Too many
        // of them and the size is not measured at all.
        rampFailures.push((err as Error).message);
        const id = (err as { sessionId?: number }).sessionId;
        if (id !== undefined) probeIds.add(id);
        if (rampFailures.length > Math.max(3, n / 100)) throw err;
        return;
      }
      live.push({ id: o.id, containerId: '' });
      rampCreate.push(o.createMs);
      rampAttach.push(o.attachedMs);
      if (++opened % 50 === 0) {
        const last = rampAttach.slice(-50);
        ctx.progress(`${B} N=${n}: ${opened} sessions attached (${((performance.now() - rampStarted) / 1000).toFixed(0)} s; the last 50: create → prompt p50 ${percentile(last, 50).toFixed(0)} ms, max ${Math.max(...last).toFixed(0)} ms)`);
      }
    });
    const rampS = (performance.now() - rampStarted) / 1000;
    const rampDb = statements.take();
    for (const l of live) {
      const row = await ctx.runtime.db.selectFrom('operations').select(['container_id', 'state']).where('id', '=', l.id).executeTakeFirstOrThrow();
      l.containerId = row.container_id ?? '';
    }
    ctx.progress(`${B} N=${n}: ${n} live sessions in ${rampS.toFixed(0)} s; holding them ${STEADY_S} s`);

    // --- steady: clients attached, heartbeats every ESSH_PORTAL_HEARTBEAT_S; echo and create probes -------
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const steadyFrom = Date.now();
    // What N live sessions alone ask of the database (no creates, no typing), before the probes start.
    statements.take();
    await sleep(QUIET_S * 1000);
    const quietDb = statements.take();
    const atStart = await snapshot(ctx, pids);
    await fleet.echoStart(live[0]!.id, ECHO_EVERY_MS);
    const probe = createProbe(ctx, probeTenant.app, probeTenant.token);
    const closesBefore = fleet.unexpectedCloses.length;
    for (let waited = 0; waited < STEADY_S; waited += 30) {
      await sleep(Math.min(30, STEADY_S - waited) * 1000);
      const gone = fleet.unexpectedCloses.length - closesBefore;
      ctx.progress(`${B} N=${n}: ${Math.min(waited + 30, STEADY_S)} s of ${STEADY_S}; clients let go unasked: ${gone}`);
    }
    const echo = await fleet.echoStop();
    const probes = await probe.stop();
    const steadyDb = statements.take();
    probes.ids.forEach((id) => probeIds.add(id));
    const atEnd = await snapshot(ctx, pids);
    const steadyTo = Date.now();
    loopDelay.disable();

    // --- what it cost --------------------------------------------------------------------------------
    global.gc?.();
    const mem = await snapshot(ctx, pids);
    const containerIds = new Set(live.map((l) => l.containerId).filter(Boolean));
    const shims = await memoryOfAll(await shimPids(containerIds));
    const cgroups = (await Promise.all([...containerIds].map(containerMemory))).filter((m) => m !== null);
    const wall = (atEnd.at - atStart.at) / 1000;

    // --- did every session live? -------------------------------------------------------------------
    const stillOpen = new Set(await fleet.open());
    const closedUnasked = fleet.unexpectedCloses.filter((c) => live.some((l) => l.id === c.id));
    const states = await Promise.all(live.map(async (l) => ({ ...l, row: await ctx.runtime.db.selectFrom('operations')
      .select(['state', 'end_reason', 'end_message']).where('id', '=', l.id).executeTakeFirstOrThrow() })));
    const notActive = states.filter((s) => s.row.state !== 'active');
    // A false disconnect: the session ended as `disconnect` although its client never left.
    const falseDisconnects = notActive.filter((s) => s.row.end_reason === 'disconnect');
    for (const s of notActive.slice(0, 5)) ctx.progress(`${B} N=${n}: session ${s.id} is ${s.row.state} ${s.row.end_reason ?? ''} ${s.row.end_message ?? ''}`);

    // --- what the server saw ----------------------------------------------------------------------
    ctx.progress(`${B} N=${n}: reading ${n} histories`);
    const stats = await mapLimit(live, 8, async (l) => windowStats((await chainEvents(ctx.runtime.client, sessionWorkflowId(l.id))).events, steadyFrom, steadyTo));
    const hb = stats.flatMap((s) => s.heartbeatToTask);
    if (DUMP) {
      await writeFile(path.join(DUMP, `live-${n}-heartbeats.json`), JSON.stringify(stats.flatMap((s) => s.heartbeatAt.map((at, i) => [at, s.heartbeatToTask[i]]))));
      await writeFile(path.join(DUMP, `live-${n}-echo.json`), JSON.stringify(echo));
    }
    const sum = (f: (s: WindowStats) => number) => stats.reduce((a, s) => a + f(s), 0);
    const sessionHours = (n * (steadyTo - steadyFrom)) / 3600_000;
    const actions = sum((s) => s.actions.signals + s.actions.timers + s.actions.activities + s.actions.searchAttributeUpserts + s.actions.markers + s.actions.continueAsNew);

    row('false disconnects', falseDisconnects.length, 'sessions', `${n} sessions, clients attached ${STEADY_S} s; target 0`);
    row('sessions not active at the end', notActive.length, 'sessions', `clients the portal let go unasked: ${closedUnasked.length}; still open: ${stillOpen.size}`);
    row('ramp: sessions attached per second', n / rampS, '/s', `${RAMP_PARALLEL} at a time: create, container, client at its prompt; ${rampS.toFixed(0)} s in all`);
    row('ramp: create → prompt p95', percentile(rampAttach, 95), 'ms');
    row('ramp: sessions that never reached their prompt', rampFailures.length, 'sessions', rampFailures[0]?.slice(0, 300));
    if (hb.length) {
      row('heartbeat signal → workflow task completed p50', percentile(hb, 50), 'ms', `${hb.length} heartbeats, server event times`);
      row('heartbeat signal → workflow task completed p99', percentile(hb, 99), 'ms');
      row('heartbeat signal → workflow task completed max', Math.max(...hb), 'ms');
    }
    row('heartbeats per second (server)', sum((s) => s.heartbeats) / ((steadyTo - steadyFrom) / 1000), '/s');
    if (probes.created.length) {
      row('create (POST → 201) p50 while live', percentile(probes.created, 50), 'ms', `${probes.created.length} sessions created, one every ${PROBE_EVERY_MS} ms; failures: ${probes.failures.length}`);
      row('create (POST → 201) p95 while live', percentile(probes.created, 95), 'ms');
    }
    if (probes.ready.length) row('create → container ready p95 while live', percentile(probes.ready, 95), 'ms', 'no warm pool');
    if (echo.samples.length) {
      row('keystroke echo p50', percentile(echo.samples, 50), 'ms', `${echo.samples.length} keys, one every ${ECHO_EVERY_MS} ms, in one of the live sessions (PTY); missed: ${echo.missed.length}`);
      row('keystroke echo p99', percentile(echo.samples, 99), 'ms');
    }
    row('runtime RSS', mem.runtime.rss / MB, 'MB', `API, workers, portal, host agent in one process; before the sessions: ${(before.runtime.rss / MB).toFixed(0)} MB`);
    row('runtime RSS per session', (mem.runtime.rss - before.runtime.rss) / n / MB, 'MB');
    row('runtime heap per session', (mem.runtime.heapUsed - before.runtime.heapUsed) / n / MB, 'MB');
    row('runtime event loop delay p99', loopDelay.percentile(99) / 1e6, 'ms');
    row('runtime CPU', ((atEnd.runtime.cpu - atStart.runtime.cpu) / wall) * 100, '% of a core', 'the benchmark driver included');
    row('Temporal server CPU', ((atEnd.temporal.cpu - atStart.temporal.cpu) / wall) * 100, '% of a core', `dev server (in-memory SQLite), /proc/${pids.temporal}/stat`);
    row('Temporal server RSS', mem.temporal.rss / MB, 'MB');
    row('client fleet CPU', ((atEnd.fleetCpu - atStart.fleetCpu) / wall) * 100, '% of a core', `${n} ssh2 clients in one process`);
    row('dockerd RSS per container', (mem.dockerd.rss - before.dockerd.rss) / n / MB, 'MB', `total ${(mem.dockerd.rss / MB).toFixed(0)} MB; the engine is shared with other runs`);
    row('containerd RSS per container', (mem.containerd.rss - before.containerd.rss) / n / MB, 'MB', `total ${(mem.containerd.rss / MB).toFixed(0)} MB`);
    row('containerd-shim per container (PSS)', shims.pss / containerIds.size / MB, 'MB', `RSS ${(shims.rss / containerIds.size / MB).toFixed(1)} MB each, ${containerIds.size} shims`);
    if (cgroups.length) {
      row('container memory (cgroup rss) per session', cgroups.reduce((a, m) => a + m.rss, 0) / cgroups.length / MB, 'MB', 'idle init + the exec\'d shell; page cache apart');
    }
    if (statements.observed) {
      row('database writes per session created', rampDb.writes / n, 'statements', `${(rampDb.reads / n).toFixed(1)} reads; create, provision, attach (the ramp, ${n} sessions); ${rampStatements.writes} before it`);
      const steadyS = (steadyTo - steadyFrom) / 1000;
      row('database writes per second while live', steadyDb.writes / steadyS, '/s', `${(steadyDb.reads / steadyS).toFixed(1)} reads/s; ${n} live sessions and the ${probes.created.length} probe sessions' lives`);
      row('database statements per second, live sessions alone', (quietDb.reads + quietDb.writes) / QUIET_S, '/s', `${(quietDb.writes / QUIET_S).toFixed(2)} of them writes; ${QUIET_S} s with ${n} live sessions and nothing else`);
    }
    row('Temporal actions per session-hour', actions / sessionHours, '/h', 'signals, timers, activities, upserts, markers, continue-as-new');
    row('history events per session-hour', sum((s) => s.events) / sessionHours, '/h');

    if (restartAfter && RESTART) rows.push(...(await restartBurst(ctx, n, live, fleet)));
    if (restartAfter && OUTAGE_S > 0 && pids.temporal) rows.push(...(await temporalOutage(ctx, n, live, fleet, pids.temporal)));
    if (restartAfter && PORTAL_RESTART) rows.push(...(await portalRestart(ctx, n, live, fleet)));
  } finally {
    ctx.progress(`${B} N=${n}: ending the sessions`);
    const endStarted = performance.now();
    statements.take();
    await fleet.close().catch(() => undefined);
    await fleet.stop();
    // All N clients leave at once: the teardowns queue at the Docker engine, minutes for hundreds.
    await endSessions(ctx, [...live.map((l) => l.id), ...probeIds], tenant.token, 600_000).catch((err) => ctx.progress(`${B}: ${err}`));
    const endS = (performance.now() - endStarted) / 1000;
    ctx.progress(`${B} N=${n}: all ended ${endS.toFixed(0)} s after the clients left`);
    const endDb = statements.take();
    row('all N ended after the clients left', endS, 's', 'every client leaves at once: the teardowns queue at the Docker engine');
    if (statements.observed) row('database writes per session ended', endDb.writes / (live.length + probeIds.size), 'statements', `${(endDb.reads / (live.length + probeIds.size)).toFixed(1)} reads, the bench's own waits included`);
  }
  return rows;
}

/**
 * The main worker (every session workflow) is SIGKILLed and started again while all N clients stay
 * attached: the heartbeats of N sessions wait at the server, then N workflows are replayed from their
 * histories at once. No session whose client stayed may end.
 */
async function restartBurst(ctx: BenchContext, n: number, live: Live[], fleet: ClientFleet): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, unit: string, note?: string) => rows.push({ benchmark: B, metric: `N=${n} restart: ${metric}`, value, unit, note });
  ctx.progress(`${B} N=${n}: killing the main worker and starting it again`);
  const closesBefore = fleet.unexpectedCloses.length;
  const from = Date.now();
  const t0 = performance.now();
  await ctx.restartMainWorker!();
  const downS = (performance.now() - t0) / 1000;
  await sleep(AFTER_RESTART_S * 1000);
  const to = Date.now();
  const states = await Promise.all(live.map((l) => sessionState(ctx, l.id)));
  const notActive = states.filter((s) => s?.state !== 'active').length;
  const stats = await mapLimit(live, 8, async (l) => windowStats((await chainEvents(ctx.runtime.client, sessionWorkflowId(l.id))).events, from, to));
  const hb = stats.flatMap((s) => s.heartbeatToTask);
  row('sessions not active after it', notActive, 'sessions', `worker down ${downS.toFixed(1)} s (SIGKILL, start); watched ${AFTER_RESTART_S} s`);
  row('clients let go unasked', fleet.unexpectedCloses.length - closesBefore, 'clients');
  if (hb.length) {
    row('heartbeat → task completed max', Math.max(...hb), 'ms', 'the catch-up: signals held while no worker ran, then N replays');
    row('heartbeat → task completed p99', percentile(hb, 99), 'ms');
  }
  return rows;
}

/**
 * The host process (its SSH portal, journals and container activities) is SIGKILLed and started again
 * on the same port: every client loses its connection and reattaches at once with its owner's key (a
 * new `docker exec` of the program in the same container). The workflows only see the heartbeats stop;
 * no session may end. Times are per client, from the kill to its prompt again.
 */
async function portalRestart(ctx: BenchContext, n: number, live: Live[], fleet: ClientFleet): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, unit: string, note?: string) => rows.push({ benchmark: B, metric: `N=${n} portal restart: ${metric}`, value, unit, note });
  const timeoutS = ctx.runtime.config.session.heartbeatTimeoutS;
  const windowS = ctx.runtime.config.ssh.reattachWindowS;
  ctx.progress(`${B} N=${n}: killing the host process (the portal of all ${n} clients) and starting it again`);
  const ids = new Set(live.map((l) => l.id));
  const closesBefore = fleet.unexpectedCloses.length;
  const reattachesBefore = fleet.reattaches.length;
  const killedAt = Date.now();
  await ctx.restartHost!();
  const downS = (Date.now() - killedAt) / 1000;
  // Every client either has its prompt again or has given up (refused, or out of time).
  const settled = () => {
    const done = new Set([...fleet.reattaches.slice(reattachesBefore), ...fleet.unexpectedCloses.slice(closesBefore)].map((r) => r.id));
    return [...ids].every((id) => done.has(id));
  };
  const deadline = Date.now() + (Math.max(timeoutS, windowS) + 60) * 1000;
  while (!settled() && Date.now() < deadline) await sleep(200);
  const reattached = fleet.reattaches.slice(reattachesBefore).filter((r) => ids.has(r.id));
  const failed = fleet.unexpectedCloses.slice(closesBefore).filter((c) => ids.has(c.id));
  const afterKill = reattached.map((r) => r.at - killedAt);
  const afterUp = reattached.map((r) => r.at - killedAt - downS * 1000);
  const attempts = reattached.reduce((a, r) => a + r.attempts, 0);
  const missing = n - reattached.length - failed.length;
  ctx.progress(`${B} N=${n}: ${reattached.length} clients reattached, ${failed.length} failed${missing ? `, ${missing} still trying` : ''}; watching ${AFTER_RESTART_S} s`);
  await sleep(AFTER_RESTART_S * 1000);
  const states = await Promise.all(live.map(async (l) => ({ id: l.id, row: await sessionState(ctx, l.id) })));
  const ended = states.filter((s) => s.row?.state !== 'active');
  const open = new Set(await fleet.open());

  row('reattaches failed', failed.length + missing, 'clients',
    `host process down ${downS.toFixed(1)} s (SIGKILL, start, ready); heartbeat timeout ${timeoutS} s, reattach window ${windowS} s` + (failed[0] ? `; e.g. ${failed[0].stderr.slice(0, 200)}` : ''));
  row('sessions not active after it', ended.length, 'sessions',
    `watched ${AFTER_RESTART_S} s after; clients attached then: ${[...ids].filter((id) => open.has(id)).length}` + (ended[0] ? `; e.g. ${ended[0].row?.state}: ${ended[0].row?.end_message}` : ''));
  if (afterKill.length) {
    row('kill → client at its prompt again p50', percentile(afterKill, 50), 'ms', `${reattached.length} clients, ${(attempts / reattached.length).toFixed(1)} connections each on average (refused while the portal was down)`);
    row('kill → client at its prompt again p99', percentile(afterKill, 99), 'ms');
    row('kill → client at its prompt again max', Math.max(...afterKill), 'ms', `${reattached.length} reattached; margin to the heartbeat timeout ${(timeoutS - Math.max(...afterKill) / 1000).toFixed(1)} s, to the reattach window ${(windowS + downS - Math.max(...afterKill) / 1000).toFixed(1)} s`);
    row('host ready → client at its prompt again p50', percentile(afterUp, 50), 'ms', 'the portal\'s share: from the restarted process being ready');
    row('host ready → client at its prompt again max', Math.max(...afterUp), 'ms');
  }
  return rows;
}

/** The Temporal server stops for OUTAGE_S seconds (SIGSTOP) and goes on; the clients stay attached throughout. */
async function temporalOutage(ctx: BenchContext, n: number, live: Live[], fleet: ClientFleet, pid: number): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, unit: string, note?: string) => rows.push({ benchmark: B, metric: `N=${n} Temporal outage: ${metric}`, value, unit, note });
  ctx.progress(`${B} N=${n}: stopping the Temporal server for ${OUTAGE_S} s`);
  const closesBefore = fleet.unexpectedCloses.length;
  process.kill(pid, 'SIGSTOP');
  try {
    await sleep(OUTAGE_S * 1000);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await sleep(AFTER_RESTART_S * 1000);
  const states = await Promise.all(live.map((l) => sessionState(ctx, l.id)));
  const ended = states.filter((s) => s?.state !== 'active');
  row('sessions not active after it', ended.length, 'sessions', `server stopped ${OUTAGE_S} s (heartbeat timeout ${ctx.runtime.config.session.heartbeatTimeoutS} s), watched ${AFTER_RESTART_S} s after`);
  row('clients let go unasked', fleet.unexpectedCloses.length - closesBefore, 'clients', ended[0] ? `e.g. ${ended[0].state}: ${ended[0].end_message}` : undefined);
  return rows;
}

export const liveSessions: BenchModule = {
  name: B,
  description: `${SIZES.join(', ')} live sessions on one host, each with an ssh2 client (PTY) in a separate process, held ${STEADY_S} s`,
  async run(ctx) {
    if (RESTART && !ctx.restartMainWorker) throw new Error('ESSH_BENCH_LIVE_RESTART=1 needs ESSH_BENCH_SPLIT_MAIN=1 (the main worker in a process of its own)');
    if (PORTAL_RESTART && !ctx.restartHost) throw new Error('ESSH_BENCH_LIVE_PORTAL_RESTART=1 needs ESSH_BENCH_SPLIT_HOST=1 (the host and its portal in a process of their own)');
    const rows: BenchRow[] = [];
    for (const [i, n] of SIZES.entries()) {
      try {
        const sized = await runSize(ctx, n, i === SIZES.length - 1);
        rows.push(...sized);
        // A size takes many minutes: its figures are shown as soon as they are known.
        ctx.progress(`${B} N=${n} done:\n${formatTable(sized)}`);
      } catch (err) {
        // The sizes measured so far stand; the one that broke says where.
        rows.push({ benchmark: B, metric: `N=${n} failed`, value: 1, unit: '', note: (err as Error).message.slice(0, 400) });
        break;
      }
    }
    return rows;
  },
};
