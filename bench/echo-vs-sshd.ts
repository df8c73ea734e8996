import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { freeLoopbackPort } from '../lib/free-port.js';
import { apiOk, endSession, waitForState } from './api-client.js';
import { countStdoutApart, openSshFor, type StdoutTransfer } from './openssh.js';
import { startBaselineContainer, startSshdPeer, type SshdPeer } from './sshd-peer.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow, WorkerProcess } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_ECHO_MB ?? 100);
const BULK_SESSIONS = Number(process.env.ESSH_BENCH_ECHO_BULK ?? 4);
const ROUNDS = Number(process.env.ESSH_BENCH_ECHO_ROUNDS ?? 2);
const IDLE_SAMPLES = 60;
const MB = 1024 * 1024;
const PROBE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'echo-probe.ts');
const PROJECT_ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Sample { at: number; ms: number }

/** bench/echo-probe.ts typing through `ssh -tt ARGS…`; its samples collect in `samples` until `stop`. */
function startProbe(sshArgs: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', PROBE, ...sshArgs], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const samples: Sample[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  createInterface({ input: child.stdout }).on('line', (line) => samples.push(JSON.parse(line) as Sample));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    samples,
    async untilSamples(n: number) {
      const deadline = Date.now() + 60_000;
      while (samples.length < n) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the echo probe has ${samples.length} of ${n} samples: ${stderr}`);
        await sleep(50);
      }
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

interface Phase {
  idle: number[];
  busy: number[];
  mbPerS: number;
  /** This process's (the portal's) event loop delay p99 and its garbage collections while the printers ran. */
  loopDelayP99Ms: number;
  gcMaxMs: number;
  gcTotalMs: number;
}

/**
 * One typist and BULK_SESSIONS printers, each an OpenSSH client of its own; the typist's samples before
 * the printers start are its idle ones, those while any prints its busy ones.
 */
async function phase(typistArgs: string[], printerArgs: (i: number) => string[]): Promise<Phase> {
  const probe = startProbe(typistArgs);
  try {
    await probe.untilSamples(IDLE_SAMPLES);
    const loopDelay = monitorEventLoopDelay({ resolution: 5 });
    const gcs: PerformanceEntry[] = [];
    const gcObserver = new PerformanceObserver((list) => gcs.push(...list.getEntries()));
    gcObserver.observe({ entryTypes: ['gc'] });
    loopDelay.enable();
    const started = Date.now();
    const transfers: StdoutTransfer[] = await Promise.all(Array.from({ length: BULK_SESSIONS }, (_, i) => countStdoutApart('ssh', printerArgs(i))));
    const ended = Date.now();
    loopDelay.disable();
    gcObserver.disconnect();
    for (const t of transfers) {
      if (t.code !== 0 || t.bytes !== MEGABYTES * MB) throw new Error(`a printer: ${t.bytes} bytes, exit ${t.code}: ${t.stderr}`);
    }
    const idle = probe.samples.filter((s) => s.at < started).map((s) => s.ms);
    const busy = probe.samples.filter((s) => s.at >= started && s.at <= ended).map((s) => s.ms);
    return {
      idle, busy, mbPerS: (BULK_SESSIONS * MEGABYTES) / ((ended - started) / 1000), loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      gcMaxMs: Math.max(0, ...gcs.map((g) => g.duration)), gcTotalMs: gcs.reduce((a, g) => a + g.duration, 0),
    };
  } finally {
    await probe.stop();
  }
}

const pooled = (phases: Phase[], pick: (p: Phase) => number[]) => phases.flatMap(pick);

/** A session's own container (its limits, init and network), for a typist that reaches it through sshd. */
async function sessionContainer(ctx: BenchContext, app: string, token: string): Promise<{ id: number; containerId: string }> {
  const { id } = await apiOk<{ id: number }>(ctx, 'POST', `/apps/${app}/sessions`, token, {});
  await waitForState(ctx, id, ['waiting_for_client'], 30_000);
  const { container_id } = await apiOk<{ container_id: string | null }>(ctx, 'GET', `/sessions/${id}`, token);
  if (!container_id) throw new Error(`session ${id} is waiting for its client but names no container`);
  return { id, containerId: container_id };
}

/**
 * Where a keystroke's echo waits while other sessions print (issue 20: at most 3× its idle p99). Every
 * client is an OpenSSH process and the typist times its echoes in a process of its own. Five ways, in
 * turn, under the same load:
 * - the portal, typist and printers on it (as in `portal-echo`);
 * - the printers on a second host process of this machine, with a portal of its own; the typist on this
 *   one. And the other way round. This is the best case of the design that gives each connection a loop
 *   of its own, as sshd's fork does: portal processes that the connections are spread over;
 * - Debian's sshd running `docker exec -it` into a session's own container, then into a plain one: the
 *   engine's path without the portal.
 */
export const echoVsSshd: BenchModule = {
  name: 'echo-vs-sshd',
  description: `keystroke echo while ${BULK_SESSIONS} sessions print ${MEGABYTES} MB each, every client an OpenSSH process: through the portal (printers on it, or on another portal process), and through Debian's sshd running docker exec`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: BULK_SESSIONS + 2 });
    const portalArgs = await openSshFor(ctx, tenant.token);
    const otherStack = `echobulk${randomBytes(3).toString('hex')}`;
    await ctx.createStack(otherStack);
    const otherTenant = await ctx.createTenant({ stack: otherStack, maxConcurrentSessions: BULK_SESSIONS + 2 });
    const otherPort = await freeLoopbackPort();
    const otherArgs = (await openSshFor(ctx, otherTenant.token)).map((a, i, all) => (all[i - 1] === '-p' ? String(otherPort) : a));
    let otherHost: WorkerProcess | undefined;
    let peer: SshdPeer | undefined;
    let session: { id: number; containerId: string } | undefined;
    const containers: Docker.Container[] = [];
    try {
      otherHost = await ctx.startHostProcess({
        ESSH_HOST_ID: otherStack, ESSH_HOST_STACKS: otherStack, ESSH_DATA_DIR: await mkdtemp(path.join(os.tmpdir(), `essh-${otherStack}-`)),
        ESSH_SSH_PORT: String(otherPort), ESSH_METRICS_PORT: String(await freeLoopbackPort()),
      });
      peer = await startSshdPeer();
      const tag = randomBytes(3).toString('hex');
      for (let i = 0; i <= BULK_SESSIONS; i++) containers.push(await startBaselineContainer(ctx.docker, `essh-bench-echo-${tag}-${i}`));
      session = await sessionContainer(ctx, tenant.app, tenant.token);
      const printed = `head -c ${MEGABYTES * MB} /dev/urandom`;
      const here = `${tenant.app}@127.0.0.1`;
      const there = `${otherTenant.app}@127.0.0.1`;
      const viaSshd = (i: number) => ['-T', ...peer!.sshArgs, 'docker', 'exec', containers[i + 1]!.id, 'sh', '-c', `'${printed}'`];
      const ways: [string, () => Promise<Phase>][] = [
        ['portal', () => phase([...portalArgs, here], () => ['-T', ...portalArgs, here, printed])],
        ['portal, printers on another portal process', () => phase([...portalArgs, here], () => ['-T', ...otherArgs, there, printed])],
        ['portal, typist on another portal process', () => phase([...otherArgs, there], () => ['-T', ...portalArgs, here, printed])],
        ['sshd + docker exec into a session container', () => phase([...peer!.sshArgs, 'docker', 'exec', '-it', session!.containerId, '/bin/sh', '-l'], viaSshd)],
        ['sshd + docker exec', () => phase([...peer!.sshArgs, 'docker', 'exec', '-it', containers[0]!.id, 'sh'], viaSshd)],
      ];
      const measured = new Map<string, Phase[]>(ways.map(([who]) => [who, []]));
      // Interleaved, so that every way sees the same machine.
      for (let round = 0; round < ROUNDS; round++) {
        const line: string[] = [];
        for (const [who, measure] of ways) {
          const p = await measure();
          measured.get(who)!.push(p);
          line.push(`${who}: p99 idle ${percentile(p.idle, 99).toFixed(1)}, busy ${percentile(p.busy, 99).toFixed(1)} ms (this process's loop delay p99 ${p.loopDelayP99Ms.toFixed(1)} ms, GC max ${p.gcMaxMs.toFixed(1)} ms)`);
        }
        ctx.progress(`echo-vs-sshd ${round + 1}/${ROUNDS}: ${line.join('; ')}`);
      }
      const rows: BenchRow[] = [];
      for (const [who, phases] of measured) {
        const idle = pooled(phases, (p) => p.idle);
        const busy = pooled(phases, (p) => p.busy);
        const ratio = percentile(busy, 99) / percentile(idle, 99);
        rows.push(
          { benchmark: 'echo-vs-sshd', metric: `${who}: echo idle p99`, value: percentile(idle, 99), unit: 'ms', note: `p50 ${percentile(idle, 50).toFixed(1)} ms; ${idle.length} keystrokes` },
          { benchmark: 'echo-vs-sshd', metric: `${who}: echo during bulk p99`, value: percentile(busy, 99), unit: 'ms', note: `p50 ${percentile(busy, 50).toFixed(1)} ms; ${busy.length} keystrokes; bulk ${phases.map((p) => p.mbPerS.toFixed(0)).join(', ')} MB/s together; loop delay p99 ${phases.map((p) => p.loopDelayP99Ms.toFixed(0)).join(', ')} ms` },
          { benchmark: 'echo-vs-sshd', metric: `${who}: ratio p99 busy / idle`, value: ratio, unit: 'x', note: ratio <= 3 ? 'target <= 3 met' : 'target <= 3 NOT met' },
        );
      }
      const busyP99 = (who: string) => percentile(pooled(measured.get(who)!, (p) => p.busy), 99);
      rows.push({ benchmark: 'echo-vs-sshd', metric: 'echo during bulk p99, portal / sshd', value: busyP99('portal') / busyP99('sshd + docker exec'), unit: 'x', note: 'baseline: sshd + docker exec, same run' });
      return rows;
    } finally {
      if (session) await endSession(ctx, session.id, tenant.token).catch(() => undefined);
      await Promise.all(containers.map((c) => c.remove({ force: true }).catch(() => undefined)));
      await peer?.stop();
      await otherHost?.stop();
    }
  },
};
