import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { openPortalShell, waitForShellOutput, type PortalShell, type PortalTarget } from '../cli/portal-client.js';
import { DEMO_PROMPT } from '../server/seed.js';
import { apiOk, endSession } from './api-client.js';
import { countStdoutApart, openSshFor } from './openssh.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_ECHO_MB ?? 100);
/** Sessions printing at once while the keystrokes are timed (issue 20: 4, not only one). */
const BULK_SESSIONS = Number(process.env.ESSH_BENCH_ECHO_BULK ?? 4);
const IDLE_SAMPLES = 60;
const SAMPLE_EVERY_MS = 50;

export async function openSession(ctx: BenchContext, app: string, token: string, body: object, pty: boolean) {
  const created = await apiOk<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${app}/sessions`, token, body);
  const shell = await openPortalShell(created.connect, { pty: pty ? { rows: 24, cols: 80, term: 'xterm' } : null });
  return { id: created.id, shell };
}

/** Types one character and times its echo; a line is cleared (Ctrl-U) now and then so it never wraps. */
export function echoTimer(shell: PortalShell) {
  let typed = 0;
  return async (): Promise<number> => {
    if (++typed % 40 === 0) {
      shell.channel.write('\x15');
      await sleep(20);
    }
    const started = performance.now();
    const echoed = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo within 30 s')), 30_000);
      shell.channel.once('data', () => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
    });
    shell.channel.write('x');
    return echoed;
  };
}

export const portalEcho: BenchModule = {
  name: 'portal-echo',
  description: `keystroke echo through the portal, idle and while ${BULK_SESSIONS} other sessions print ${MEGABYTES} MB each (all in this runtime)`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: BULK_SESSIONS + 2 });
    const interactive = await openSession(ctx, tenant.app, tenant.token, {}, true);
    // Each bulk session is another user's OpenSSH, a process of its own, as it would be.
    const sshArgs = await openSshFor(ctx, tenant.token);
    try {
      await waitForShellOutput(interactive.shell, DEMO_PROMPT);
      const echo = echoTimer(interactive.shell);
      const idle: number[] = [];
      for (let i = 0; i < IDLE_SAMPLES; i++) {
        idle.push(await echo());
        await sleep(SAMPLE_EVERY_MS);
      }

      // The portal runs in this process: its event loop's stalls while the bulk sessions print say how
      // much of an echo's delay is the portal's own and how much the machine's.
      const loopDelay = monitorEventLoopDelay({ resolution: 5 });
      loopDelay.enable();
      let printing = BULK_SESSIONS;
      const bulkStarted = performance.now();
      // Their output is counted in processes of their own, not read by this one (the portal's).
      const drained = Array.from({ length: BULK_SESSIONS }, () =>
        countStdoutApart('ssh', [...sshArgs, `${tenant.app}@127.0.0.1`, `head -c ${MEGABYTES * 1024 * 1024} /dev/urandom`])
          .finally(() => printing--));
      const busy: number[] = [];
      // How long the portal held each bulk session's output for the keystrokes (portal/output-pacing.ts),
      // read while their channels are open.
      const held = new Map<number, number>();
      const pacing = ctx.runtime.portal?.pacing;
      const windowsBefore = pacing?.windows ?? 0;
      while (printing > 0) {
        busy.push(await echo());
        for (const a of ctx.runtime.portal?.attachmentStats() ?? []) if (a.sessionId !== interactive.id) held.set(a.sessionId, a.heldMs);
        await sleep(SAMPLE_EVERY_MS);
      }
      const transfers = await Promise.all(drained);
      loopDelay.disable();
      const bulkSeconds = (performance.now() - bulkStarted) / 1000;
      for (const transfer of transfers) {
        if (transfer.code !== 0 || transfer.bytes !== MEGABYTES * 1024 * 1024) throw new Error(`a bulk session: ${transfer.bytes} bytes, exit ${transfer.code}: ${transfer.stderr}`);
      }
      ctx.progress(`portal-echo: idle p50 ${percentile(idle, 50).toFixed(1)} ms, during ${MEGABYTES} MB p50 ${percentile(busy, 50).toFixed(1)} ms p99 ${percentile(busy, 99).toFixed(1)} ms`);
      const rows: BenchRow[] = [
        { benchmark: 'portal-echo', metric: 'echo idle p50', value: percentile(idle, 50), unit: 'ms', note: `baseline: ${IDLE_SAMPLES} keystrokes, nothing else running` },
        { benchmark: 'portal-echo', metric: 'echo idle p99', value: percentile(idle, 99), unit: 'ms' },
        { benchmark: 'portal-echo', metric: 'echo during bulk output p50', value: percentile(busy, 50), unit: 'ms', note: `${busy.length} keystrokes while ${BULK_SESSIONS} other sessions printed ${MEGABYTES} MB each` },
        { benchmark: 'portal-echo', metric: 'echo during bulk output p99', value: percentile(busy, 99), unit: 'ms' },
        { benchmark: 'portal-echo', metric: 'echo during bulk output max', value: Math.max(...busy), unit: 'ms' },
        {
          benchmark: 'portal-echo', metric: 'ratio p99 busy / idle', value: percentile(busy, 99) / percentile(idle, 99), unit: 'x',
          note: percentile(busy, 99) / percentile(idle, 99) <= 3 ? 'target <= 3 met' : 'target <= 3 NOT met',
        },
        { benchmark: 'portal-echo', metric: 'the portal\'s event loop delay during bulk p99', value: loopDelay.percentile(99) / 1e6, unit: 'ms', note: `max ${(loopDelay.max / 1e6).toFixed(1)} ms (sampled every 5 ms)` },
        {
          benchmark: 'portal-echo', metric: 'bulk output held for keystrokes, per bulk session', value: [...held.values()].reduce((a, b) => a + b, 0) / Math.max(1, held.size) / 10 / bulkSeconds, unit: '%',
          note: `ESSH_PORTAL_INTERACTIVE_MS=${pacing?.limits.interactiveMs ?? '?'}; ${(pacing?.windows ?? 0) - windowsBefore} windows for ${busy.length} keystrokes`,
        },
        {
          benchmark: 'portal-echo', metric: 'the bulk sessions meanwhile, together', value: (BULK_SESSIONS * MEGABYTES) / bulkSeconds, unit: 'MB/s',
          note: `${BULK_SESSIONS} OpenSSH clients, each its own process; slowest ${Math.max(...transfers.map((t) => t.seconds)).toFixed(1)} s`,
        },
      ];
      return rows;
    } finally {
      interactive.shell.close();
      await endSession(ctx, interactive.id, tenant.token);
    }
  },
};
