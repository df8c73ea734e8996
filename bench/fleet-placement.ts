// What placement costs (issue 19 part 5): a session's time to ready on a stack served by one host process
// against a stack served by three, in the same run, interleaved. Each host process is server/worker-main.ts
// with its own ESSH_HOST_ID, data dir, portal and task queue (as test/fleet-placement.test.ts starts
// them); all share this machine's Docker engine and Temporal dev server.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openPortalShell, waitForShellOutput, type PortalShell, type PortalTarget } from '../cli/portal-client.js';
import { DEMO_PROMPT } from '../server/seed.js';
import { apiCall, endSessions, sleep } from './api-client.js';
import { phases } from './session-ready.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const B = 'fleet-placement';
/** Sessions per arm; the two arms alternate (one host, three hosts, three, one, …). */
const RUNS = Number(process.env.ESSH_BENCH_FLEET_RUNS ?? 24);
const WARMUP = 2;
/**
 * Each arm keeps its last sessions attached while the next is created: on three hosts they are then
 * spread over the hosts (the one with the most room wins; with none live every create would go to the
 * first by name), and both arms keep as many containers live on the engine.
 */
const KEEP_LIVE = 2;

interface Arm {
  label: string;
  stack: string;
  hostIds: string[];
  app: string;
  token: string;
  live: PortalShell[];
  ids: number[];
  samples: Sample[];
}

interface Sample {
  /** POST → 201: the create transaction, placement inside it. */
  apiMs: number;
  /** POST → the workflow task after the container started (server timestamps): waiting_for_client. */
  readyMs: number;
  /** POST → the shell's prompt through the placed host's portal (the client connects right after the 201). */
  promptMs: number;
  host: string;
}

async function sampleOnce(ctx: BenchContext, arm: Arm): Promise<Sample> {
  const t0 = Date.now();
  const p0 = performance.now();
  const r = await apiCall<{ id: number; connect: PortalTarget; message?: string }>(ctx, 'POST', `/apps/${arm.app}/sessions`, arm.token, {});
  if (r.status !== 201) throw new Error(`creating a session on ${arm.label}: ${r.status} ${r.body.message}`);
  const apiMs = performance.now() - p0;
  arm.ids.push(r.body.id);
  const shell = await openPortalShell(r.body.connect, { pty: { rows: 24, cols: 80 } });
  arm.live.push(shell);
  await waitForShellOutput(shell, DEMO_PROMPT, 120_000);
  const promptMs = performance.now() - p0;
  const { readyAt } = await readyTask(ctx, r.body.id);
  const row = await ctx.runtime.db.selectFrom('operations').select('host_id').where('id', '=', r.body.id).executeTakeFirstOrThrow();
  // The oldest attached one leaves, as its user would: its session ends `disconnect`.
  while (arm.live.length > KEEP_LIVE) arm.live.shift()!.close();
  return { apiMs, readyMs: readyAt - t0, promptMs, host: row.host_id ?? '(none)' };
}

/**
 * The session's history up to its workflow task after the container started. The client may have its
 * prompt before that task completes (the portal waits for the container, not for the workflow), so the
 * history is read again until it is there; its times are the server's, so the waiting adds nothing.
 */
async function readyTask(ctx: BenchContext, id: number) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await phases(ctx, id);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

async function waitForHosts(ctx: BenchContext, ids: string[]) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const rows = await ctx.runtime.db.selectFrom('hosts').select(['host_id', 'ssh_port']).where('host_id', 'in', ids).execute();
    if (rows.length === ids.length && rows.every((h) => h.ssh_port)) return;
    if (Date.now() > deadline) throw new Error(`hosts ${ids.join(', ')} did not all report with their portal within 60 s (${rows.length} did)`);
    await sleep(250);
  }
}

export const fleetPlacement: BenchModule = {
  name: B,
  description: `session ready on a stack of one host process against a stack of three, ${RUNS} sessions each, interleaved`,
  async run(ctx) {
    const suffix = randomBytes(3).toString('hex');
    const dirs: string[] = [];
    const arms: Arm[] = [];
    try {
      for (const [label, count] of [['1 host', 1], ['3 hosts', 3]] as const) {
        const stack = `fleet${count}-${suffix}`;
        await ctx.createStack(stack);
        const tenant = await ctx.createTenant({ stack, maxConcurrentSessions: KEEP_LIVE + 5 });
        const hostIds = Array.from({ length: count }, (_, i) => `${stack}-${'abc'[i]}`);
        // One at a time: tsx start-ups side by side on two cores take longer than one after the other.
        for (const id of hostIds) {
          const dataDir = await mkdtemp(path.join(os.tmpdir(), `essh-${id}-`));
          dirs.push(dataDir);
          ctx.progress(`${B}: starting host process ${id}`);
          await ctx.startHostProcess({ ESSH_HOST_ID: id, ESSH_HOST_STACKS: stack, ESSH_DATA_DIR: dataDir });
        }
        await waitForHosts(ctx, hostIds);
        arms.push({ label, stack, hostIds, app: tenant.app, token: tenant.token, live: [], ids: [], samples: [] });
      }
      const [one, three] = arms as [Arm, Arm];
      for (let i = 0; i < WARMUP + RUNS; i++) {
        // ABBA: neither arm always goes first after the other's teardown started.
        const order = i % 2 === 0 ? [one, three] : [three, one];
        const got = new Map<Arm, Sample>();
        for (const arm of order) got.set(arm, await sampleOnce(ctx, arm));
        if (i < WARMUP) continue;
        for (const [arm, s] of got) arm.samples.push(s);
        const a = got.get(one)!;
        const b = got.get(three)!;
        ctx.progress(`${B} ${i - WARMUP + 1}/${RUNS}: ready ${a.readyMs} ms on 1 host, ${b.readyMs} ms on 3 (${b.host}); prompt ${a.promptMs.toFixed(0)} / ${b.promptMs.toFixed(0)} ms`);
      }
    } finally {
      for (const arm of arms) {
        for (const s of arm.live.splice(0)) s.close();
        await endSessions(ctx, arm.ids, arm.token).catch((err) => ctx.progress(`${B}: ${(err as Error).message}`));
      }
      for (const d of dirs) await rm(d, { recursive: true, force: true }).catch(() => undefined);
    }
    const [one, three] = arms as [Arm, Arm];
    const rows: BenchRow[] = [];
    const figure = (what: string, pick: (s: Sample) => number, note: string) => {
      const a = one.samples.map(pick);
      const b = three.samples.map(pick);
      for (const p of [50, 95]) {
        rows.push({ benchmark: B, metric: `${what}, 1 host p${p}`, value: percentile(a, p), unit: 'ms', note: p === 50 ? note : undefined });
        rows.push({ benchmark: B, metric: `${what}, 3 hosts p${p}`, value: percentile(b, p), unit: 'ms' });
      }
      rows.push({ benchmark: B, metric: `${what}: ratio 3 hosts / 1 host p50`, value: percentile(b, 50) / percentile(a, 50), unit: 'x' });
      rows.push({ benchmark: B, metric: `${what}: ratio 3 hosts / 1 host p95`, value: percentile(b, 95) / percentile(a, 95), unit: 'x' });
      rows.push({
        benchmark: B, metric: `${what}: median of paired ratios`, unit: 'x', note: 'each 3-host session over the 1-host one of the same round',
        value: percentile(b.map((x, i) => x / a[i]!), 50),
      });
    };
    figure('create → waiting_for_client', (s) => s.readyMs, `${RUNS} sessions per arm, interleaved; workflow history times`);
    figure('create → prompt through the portal', (s) => s.promptMs, 'ssh2 client connecting right after the 201');
    figure('POST → 201', (s) => s.apiMs, 'placement runs in the create transaction');
    const spread = three.hostIds.map((h) => `${h.slice(-1)}: ${three.samples.filter((s) => s.host === h).length}`).join(', ');
    rows.push({
      benchmark: B, metric: 'sessions per host of the 3-host stack', value: new Set(three.samples.map((s) => s.host)).size, unit: 'hosts used',
      note: `${spread} (${KEEP_LIVE} kept attached per arm)`,
    });
    rows.push({
      benchmark: B, metric: 'what the shared engine hides', value: 0, unit: '',
      note: 'all 4 host processes use one dockerd, one kernel and one disk: container creates of the 3 hosts queue at the same engine ' +
        '(no parallel gain), the image is already pulled for every host, free memory and disk reported are the same machine\'s, ' +
        'and the API, Temporal and every portal are on loopback (no network between them)',
    });
    return rows;
  },
};
