import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { openPortalShell, waitForShellOutput, type PortalShell, type PortalTarget } from '../cli/portal-client.js';
import { DEMO_PROMPT } from '../server/seed.js';
import { apiOk, endSession } from './api-client.js';
import { openSession } from './portal-echo.js';
import { percentile } from './stats.js';
import type { BenchModule, BenchRow } from './types.js';

const SAMPLES = Number(process.env.ESSH_BENCH_OBSERVER_SAMPLES ?? 300);
const SAMPLE_EVERY_MS = 30;

/** When the next chunk arrives on `shell`, in performance.now() time. */
function nextChunk(shell: PortalShell): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('nothing within 30 s')), 30_000);
    shell.channel.once('data', () => {
      clearTimeout(timer);
      resolve(performance.now());
    });
  });
}

/**
 * How far a live observer (`watch-<id>`, through the same portal) is behind the owner's own screen: the
 * owner types a character, and the time its echo reaches the observer is set against the time it
 * reaches the owner, whose echo time (keystroke to screen) is the baseline of the same run.
 */
export const observerDelay: BenchModule = {
  name: 'observer-delay',
  description: `a live observer's delay behind the owner's screen, ${SAMPLES} keystroke echoes, against the owner's own echo`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 2 });
    const owner = await openSession(ctx, tenant.app, tenant.token, {}, true);
    let observer: PortalShell | undefined;
    try {
      await waitForShellOutput(owner.shell, DEMO_PROMPT);
      const watch = await apiOk<{ connect: PortalTarget }>(ctx, 'POST', `/sessions/${owner.id}/watch`, tenant.token, {});
      observer = await openPortalShell(watch.connect, { pty: { rows: 24, cols: 80, term: 'xterm' } });
      // The observer is shown the screen so far, the prompt last.
      await waitForShellOutput(observer, DEMO_PROMPT);
      observer.channel.stderr.resume();
      // The owner is told of the observer on stderr; stdout is what is timed.
      owner.shell.channel.stderr.resume();
      const echo: number[] = [];
      const behind: number[] = [];
      for (let i = 0; i < SAMPLES; i++) {
        if (i > 0 && i % 40 === 0) {
          // A line never wraps: Ctrl-U clears it, and its redraw is let pass on both screens.
          owner.shell.channel.write('\x15');
          await sleep(200);
        }
        const atOwner = nextChunk(owner.shell);
        const atObserver = nextChunk(observer);
        const typed = performance.now();
        owner.shell.channel.write('x');
        const [o, w] = await Promise.all([atOwner, atObserver]);
        echo.push(o - typed);
        behind.push(w - o);
        await sleep(SAMPLE_EVERY_MS);
      }
      const seen = behind.map((b, i) => b + echo[i]!);
      ctx.progress(`observer-delay: owner echo p99 ${percentile(echo, 99).toFixed(1)} ms, observer behind the owner p99 ${percentile(behind, 99).toFixed(1)} ms`);
      const rows: BenchRow[] = [
        { benchmark: 'observer-delay', metric: 'owner echo p50', value: percentile(echo, 50), unit: 'ms', note: `baseline: keystroke to the owner's screen, ${SAMPLES} keystrokes` },
        { benchmark: 'observer-delay', metric: 'owner echo p99', value: percentile(echo, 99), unit: 'ms' },
        { benchmark: 'observer-delay', metric: 'observer behind owner p50', value: percentile(behind, 50), unit: 'ms', note: 'the echo on the observer\'s screen less on the owner\'s (negative: the observer first)' },
        { benchmark: 'observer-delay', metric: 'observer behind owner p99', value: percentile(behind, 99), unit: 'ms' },
        { benchmark: 'observer-delay', metric: 'observer behind owner max', value: Math.max(...behind), unit: 'ms' },
        { benchmark: 'observer-delay', metric: 'keystroke to observer p99', value: percentile(seen, 99), unit: 'ms' },
        { benchmark: 'observer-delay', metric: 'ratio p99 keystroke-to-observer / owner echo', value: percentile(seen, 99) / percentile(echo, 99), unit: 'x' },
      ];
      return rows;
    } finally {
      observer?.close();
      owner.shell.close();
      await endSession(ctx, owner.id, tenant.token);
    }
  },
};
