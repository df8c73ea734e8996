// Issue 19 part 3's benchmark: an upgrade of a host process under N live sessions whose clients type
// through it (test/host-upgrade.test.ts does the same with 10–30). The new process starts on the same
// ESSH_HOST_ID, data dir and ports, then the old one gets SIGTERM (lib/handover.ts). The baseline is
// the same upgrade under BASELINE sessions, earlier in the same run, on a host process of its own.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { hostProcesses, REUSE_PORT } from '../lib/handover.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { AttachedNotes } from '../portal/attached-notes.js';
import type { PortalTarget } from '../cli/portal-client.js';
import { apiCall, endSessions, sessionState, sleep, waitForState } from './api-client.js';
import { mapLimit } from './histories.js';
import { startClientFleet, type ClientFleet } from './live-fleet.js';
import { formatTable, percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow, WorkerProcess } from './types.js';

const B = 'host-upgrade';
const SESSIONS = Number(process.env.ESSH_BENCH_UPGRADE_SESSIONS ?? 200);
const BASELINE = Number(process.env.ESSH_BENCH_UPGRADE_BASELINE ?? 10);
/** Every client types a key this often (200 clients: 400 keys a second through the portal). */
const TYPE_EVERY_MS = Number(process.env.ESSH_BENCH_UPGRADE_TYPE_MS ?? 500);
const RAMP_PARALLEL = Number(process.env.ESSH_BENCH_UPGRADE_RAMP_PARALLEL ?? 8);
/**
 * The new process's reattach window, shorter than the hold after the upgrade: were it to take the old
 * process's live connections for a crashed predecessor's, their sessions would end when it closes.
 */
const REATTACH_WINDOW_S = 20;
/** What the successor prints while it waits for the old process's SIGTERM (Node 20 has no reusePort). */
const WAITING_LINE = 'waiting for its SIGTERM';

/** The output each client saw that its journal lacks: bytes from the first difference to the client's end. */
async function missingFromJournal(dataDir: string, id: number, seen: Buffer): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const r of readRecords(journalPath(dataDir, id))) if (r.type === RecordType.output) chunks.push(r.payload);
  const journal = Buffer.concat(chunks);
  const n = Math.min(journal.length, seen.length);
  let same = 0;
  while (same < n && journal[same] === seen[same]) same++;
  return seen.length - same;
}

/** The portal instance (boot id) that the session's client is noted as attached through on this host. */
function notedBoot(dataDir: string, id: number): string {
  return /^portal-([0-9a-f]+)-/.exec(new AttachedNotes(dataDir).read(id) ?? '')?.[1] ?? '';
}

/**
 * Creates a session and attaches a client of the fleet to it. `refusedForMs`: a refused connect is tried
 * again every 50 ms for that long, as an `ssh` user would (between the old process closing its listener
 * and the new one binding it, on Node 20); a refused connect does not spend the session's token.
 */
async function openOne(ctx: BenchContext, fleet: ClientFleet, app: string, token: string, refusedForMs = 0) {
  const t0 = performance.now();
  const r = await apiCall<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${app}/sessions`, token, {});
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  for (let refused = 0; ; refused++) {
    try {
      await fleet.attach(r.body.id, r.body.connect);
      return { id: r.body.id, ms: performance.now() - t0, refused };
    } catch (err) {
      const message = (err as Error).message;
      if (/cannot reach the SSH portal/.test(message) && performance.now() - t0 < refusedForMs) {
        await sleep(50);
        continue;
      }
      throw Object.assign(new Error(`session ${r.body.id}: ${message}`), { sessionId: r.body.id });
    }
  }
}

interface Measured {
  opened: number;
  ended: number;
  letGo: number;
  bytesMissing: number;
  sessionsMissing: number;
  termToPrompt: number;
  spawnToPrompt: number;
  exitAfterLast: number;
}

async function upgradeUnder(ctx: BenchContext, n: number): Promise<{ rows: BenchRow[]; m: Measured }> {
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, unit: string, note?: string) => rows.push({ benchmark: B, metric: `N=${n} ${metric}`, value, unit, note });
  const suffix = randomBytes(3).toString('hex');
  // A stack of its own per size: a host process stopped after the baseline still counts as live for
  // placement until ESSH_HOST_STALE_S after its last report.
  const stack = `upgrade${n}-${suffix}`;
  await ctx.createStack(stack);
  const tenant = await ctx.createTenant({ stack, maxConcurrentSessions: n + 10 });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `essh-${stack}-`));
  const hostEnv = {
    ESSH_HOST_ID: stack, ESSH_HOST_STACKS: stack, ESSH_DATA_DIR: dataDir, ESSH_HOST_MAX_SESSIONS: String(n + 20),
    ESSH_SSH_PORT: String(await freePort()), ESSH_METRICS_PORT: String(await freePort()),
    ESSH_REATTACH_WINDOW_S: String(REATTACH_WINDOW_S), ESSH_UPGRADE_DRAIN_S: '3600',
  };
  const heartbeatS = ctx.runtime.config.ssh.heartbeatIntervalS;
  const timeoutS = ctx.runtime.config.session.heartbeatTimeoutS;
  // Past the heartbeat timeout and the successor's reattach window: every session the upgrade would end, ended.
  const holdS = Number(process.env.ESSH_BENCH_UPGRADE_HOLD_S ?? timeoutS + REATTACH_WINDOW_S + 2 * heartbeatS);
  let old: WorkerProcess | undefined = await ctx.startHostProcess(hostEnv);
  let next: WorkerProcess | undefined;
  const fleet = await startClientFleet();
  const opened: number[] = [];
  const all: number[] = [];
  try {
    // --- N sessions, each with a client at its prompt ---------------------------------------------
    const rampFailures: string[] = [];
    const rampMs: number[] = [];
    const rampStarted = performance.now();
    await mapLimit(Array.from({ length: n }), RAMP_PARALLEL, async () => {
      // Too many failures: the size is where this machine breaks; the upgrade runs under what opened.
      if (rampFailures.length > Math.max(3, n / 100)) return;
      try {
        const o = await openOne(ctx, fleet, tenant.app, tenant.token);
        opened.push(o.id);
        all.push(o.id);
        rampMs.push(o.ms);
        if (opened.length % 50 === 0) ctx.progress(`${B} N=${n}: ${opened.length} clients at their prompt`);
      } catch (err) {
        rampFailures.push((err as Error).message);
        const id = (err as { sessionId?: number }).sessionId;
        if (id !== undefined) all.push(id);
      }
    });
    const rampS = (performance.now() - rampStarted) / 1000;
    if (opened.length === 0) throw new Error(`no session opened: ${rampFailures[0]}`);
    row('sessions opened, clients at their prompt', opened.length, 'sessions',
      `${(opened.length / rampS).toFixed(2)} /s, ${RAMP_PARALLEL} at a time; create → prompt p95 ${percentile(rampMs, 95).toFixed(0)} ms` +
        (rampFailures.length ? `; ${rampFailures.length} failed, e.g. ${rampFailures[0]!.slice(0, 200)}` : ''));
    const oldBoot = hostProcesses(dataDir).others().find((m) => m.pid === old!.pid)?.bootIds[0] ?? '?';
    await fleet.typeStart(TYPE_EVERY_MS);
    await sleep(2 * heartbeatS * 1000);
    const closesBefore = fleet.unexpectedCloses.length;

    // --- the upgrade: the new process first (on Node 20 it waits for the ports), then SIGTERM to the old
    ctx.progress(`${B} N=${n}: upgrading the host process under ${opened.length} typing clients`);
    const spawnAt = performance.now();
    next = await ctx.startHostProcess(hostEnv, { readyWhen: REUSE_PORT ? 'essh worker ready' : WAITING_LINE });
    const waitingAt = performance.now();
    const termAt = performance.now();
    old.signal('SIGTERM');
    // A user arriving at that moment: the create and the attach run while the new process takes over.
    const newSession = openOne(ctx, fleet, tenant.app, tenant.token, 10_000);
    await old.printed('essh worker handing over', 30_000);
    await next.printed('essh worker ready', 120_000);
    const readyAt = performance.now();
    const fresh = await newSession.catch((err) => {
      const id = (err as { sessionId?: number }).sessionId;
      if (id !== undefined) all.push(id);
      throw err;
    });
    all.push(fresh.id);
    const promptAt = performance.now();
    const newBoot = hostProcesses(dataDir).others().find((m) => m.pid === next!.pid)?.bootIds[0] ?? '?';
    const termToPrompt = promptAt - termAt;
    const spawnToPrompt = promptAt - spawnAt;
    row('new process: start → waiting for the old one\'s SIGTERM', waitingAt - spawnAt, 'ms', 'its own start (tsx compiles the sources: the production build starts faster)');
    row('new process: old one\'s SIGTERM → ready', readyAt - termAt, 'ms');
    row('new session: old one\'s SIGTERM → its client at the prompt', termToPrompt, 'ms',
      `created at the SIGTERM; goal <= 5000 ms; ${fresh.refused} connects refused`);
    row('new session: new process started → its client at the prompt', spawnToPrompt, 'ms', 'the same, with the new process\'s own start');

    // --- the hold: every session whose client stays must live on ------------------------------------
    ctx.progress(`${B} N=${n}: holding ${holdS} s (heartbeat timeout ${timeoutS} s, reattach window ${REATTACH_WINDOW_S} s)`);
    await sleep(holdS * 1000);
    const states = await Promise.all(opened.map(async (id) => ({ id, row: await sessionState(ctx, id) })));
    const ended = states.filter((s) => s.row?.state !== 'active');
    const letGo = fleet.unexpectedCloses.slice(closesBefore).filter((c) => opened.includes(c.id));
    const stillOld = opened.filter((id) => notedBoot(dataDir, id) === oldBoot).length;
    row('sessions ended', ended.length, 'sessions', `of ${opened.length}, ${holdS} s after the SIGTERM; goal 0` + (ended[0] ? `; e.g. ${ended[0].id} ${ended[0].row?.state}: ${ended[0].row?.end_message}` : ''));
    row('clients let go', letGo.length, 'clients', `goal 0; ${stillOld} still noted on the old process` + (letGo[0] ? `; e.g. ${letGo[0].stderr.slice(0, 150)}` : ''));

    // --- every byte each client saw, in its journal ----------------------------------------------
    await fleet.typeStop();
    await sleep(1000);
    const seen = await fleet.seen(opened);
    let bytesMissing = 0;
    let sessionsMissing = 0;
    let bytesSeen = 0;
    for (const id of opened) {
      const got = seen.get(id) ?? Buffer.alloc(0);
      bytesSeen += got.length;
      const missing = await missingFromJournal(dataDir, id, got);
      bytesMissing += missing;
      if (missing) sessionsMissing++;
    }
    row('bytes the clients saw missing from the journals', bytesMissing, 'bytes',
      `goal 0; ${sessionsMissing} sessions short; ${(bytesSeen / 1024).toFixed(0)} kB seen in all, each compared byte by byte`);

    // --- the old process leaves after its last client, and not before ------------------------------
    const [last, ...rest] = opened;
    let oldExit: number | null | undefined;
    void old.exited.then((code) => (oldExit = code));
    await fleet.close(rest);
    await mapLimit(rest, 16, (id) => waitForState(ctx, id, ['ending', 'ended'], 180_000, 200));
    const earlyExit = oldExit !== undefined;
    const lastLeftAt = performance.now();
    await fleet.close([last!]);
    const exitTimeout = setTimeout(() => old?.kill(), 120_000);
    await old.exited;
    clearTimeout(exitTimeout);
    const exitAfterLast = performance.now() - lastLeftAt;
    old = undefined;
    row('old process exited before its last client left', earlyExit ? 1 : 0, '', `goal 0; ${rest.length} of its clients had left, their sessions ending`);
    // The new session's client outlived the old process: the new one serves it.
    const freshServed = (await fleet.open()).includes(fresh.id) && (await sessionState(ctx, fresh.id))?.state === 'active';
    const freshNote = notedBoot(dataDir, fresh.id);
    row('new session still attached after the old process exited', freshServed ? 1 : 0, '',
      `goal 1; its client's connection noted on the new process's portal (for a reattach after a crash): ${freshNote === newBoot ? 'yes' : freshNote ? `no, on ${freshNote}` : 'no note'}`);
    row('old process exits after its last client left', exitAfterLast, 'ms', `exit code ${oldExit}`);
    return {
      rows,
      m: {
        opened: opened.length, ended: ended.length, letGo: letGo.length, bytesMissing, sessionsMissing, termToPrompt, spawnToPrompt, exitAfterLast,
      },
    };
  } finally {
    await fleet.typeStop().catch(() => undefined);
    await fleet.close().catch(() => undefined);
    await fleet.stop();
    await endSessions(ctx, all, tenant.token, 300_000).catch((err) => ctx.progress(`${B} N=${n}: ${(err as Error).message}`));
    await old?.stop();
    await next?.stop();
    await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

export const hostUpgrade: BenchModule = {
  name: B,
  description: `an upgrade of a host process under ${SESSIONS} live sessions whose clients type, beside the same under ${BASELINE}`,
  async run(ctx) {
    const rows: BenchRow[] = [];
    const measured = new Map<number, Measured>();
    for (const n of [...new Set([BASELINE, SESSIONS])]) {
      try {
        const { rows: sized, m } = await upgradeUnder(ctx, n);
        rows.push(...sized);
        measured.set(n, m);
        ctx.progress(`${B} N=${n} done:\n${formatTable(sized)}`);
      } catch (err) {
        rows.push({ benchmark: B, metric: `N=${n} failed`, value: 1, unit: '', note: (err as Error).message.slice(0, 400) });
        break;
      }
    }
    const base = measured.get(BASELINE);
    const big = measured.get(SESSIONS);
    if (base && big && SESSIONS !== BASELINE) {
      const ratio = (metric: string, a: number, b: number) => rows.push({ benchmark: B, metric: `ratio N=${SESSIONS} / N=${BASELINE}: ${metric}`, value: b / a, unit: 'x' });
      ratio('SIGTERM → new session\'s prompt', base.termToPrompt, big.termToPrompt);
      ratio('new process started → new session\'s prompt', base.spawnToPrompt, big.spawnToPrompt);
      ratio('last client left → old process exited', base.exitAfterLast, big.exitAfterLast);
    }
    return rows;
  },
};
