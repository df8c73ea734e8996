import { performance } from 'node:perf_hooks';
import { apiCall, endSession, sleep } from './api-client.js';
import { openSshFor, readStdout } from './openssh.js';
import { percentile } from './stats.js';
import type { BenchModule, BenchRow } from './types.js';

const RUNS = Number(process.env.ESSH_BENCH_SLOT_RUNS ?? 10);
const MEGABYTES = Number(process.env.ESSH_BENCH_THROUGHPUT_MB ?? 100);

/**
 * On an account of one session: `ssh APP@host` prints MEGABYTES through the portal to OpenSSH; the
 * moment ssh returns with its exit status, the next create. CONTRACT §8: accepted at once, whatever the
 * session printed (before exec sessions the slot stayed taken until the capture had read the output:
 * 29 s after 30 MB).
 */
export const slotAfterBulk: BenchModule = {
  name: 'slot-after-bulk',
  description: `\`ssh\` of a ${MEGABYTES} MB session returns → the next create on a one-session account answered 201`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 1 });
    const sshArgs = await openSshFor(ctx, tenant.token);
    const untilAccepted: number[] = [];
    const refusals: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = await readStdout('ssh', [...sshArgs, `${tenant.app}@127.0.0.1`, `head -c ${MEGABYTES * 1024 * 1024} /dev/zero`]);
      if (t.code !== 0 || t.bytes !== MEGABYTES * 1024 * 1024) throw new Error(`ssh: ${t.bytes} bytes, exit ${t.code}: ${t.stderr}`);
      let refused = 0;
      let created: { id: number } | undefined;
      for (;;) {
        const r = await apiCall(ctx, 'POST', `/apps/${tenant.app}/sessions`, tenant.token, {});
        if (r.status === 201) {
          created = r.body;
          break;
        }
        if (r.status !== 429) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
        refused++;
        if (performance.now() - t.endedAt > 60_000) throw new Error('the slot was not free 60 s after ssh returned');
        await sleep(10);
      }
      untilAccepted.push(performance.now() - t.endedAt);
      refusals.push(refused);
      ctx.progress(`slot-after-bulk ${i + 1}/${RUNS}: create accepted ${untilAccepted.at(-1)!.toFixed(0)} ms after ssh returned (${refused} refusals first)`);
      await endSession(ctx, created!.id, tenant.token);
    }
    const p95 = percentile(untilAccepted, 95);
    return [
      { benchmark: 'slot-after-bulk', metric: 'ssh returned → create 201, p50', value: percentile(untilAccepted, 50), unit: 'ms', note: `${MEGABYTES} MB per session, ${RUNS} runs, one-session account` },
      { benchmark: 'slot-after-bulk', metric: 'ssh returned → create 201, p95', value: p95, unit: 'ms', note: p95 <= 500 ? 'target <= 500 ms met' : 'target <= 500 ms NOT met' },
      { benchmark: 'slot-after-bulk', metric: 'creates refused (429) before that, max', value: Math.max(...refusals), unit: '' },
    ] satisfies BenchRow[];
  },
};
