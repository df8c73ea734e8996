import { randomBytes } from 'node:crypto';
import { benchDrainThroughput } from '../drains/bench.js';
import type { Principal } from '../services/auth.js';
import { DEMO_IMAGE } from '../stack/seed.js';
import type { BenchModule } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_DRAIN_MB ?? 50);

export const drainThroughput: BenchModule = {
  name: 'drain-throughput',
  description: `a session printing ${MEGABYTES} MB to an HTTPS drain on loopback (drains/bench.ts)`,
  async run(ctx) {
    // drains/bench.ts sets up its own account, app and drain through the API, which takes an operator.
    const operator: Principal = { id: 0, name: 'Benchmark', email: 'bench@example.com', role: 'operator', accountIds: [] };
    const suffix = randomBytes(3).toString('hex');
    const user = await ctx.runtime.admin.createUser(operator, { name: `Bench operator ${suffix}`, email: `bench-op-${suffix}@example.com`, role: 'operator', accounts: [] });
    const r = await benchDrainThroughput({ apiUrl: ctx.apiUrl, operatorToken: user.token, image: DEMO_IMAGE, stack: 'local', megabytes: MEGABYTES });
    const b = 'drain-throughput';
    return [
      { benchmark: b, metric: 'output events delivered', value: r.eventsPerSecond, unit: 'events/s', note: `${r.outputEvents} events, ${r.requests} HTTPS requests, ${r.megabytesPrinted} MB printed` },
      { benchmark: b, metric: 'output delivered', value: r.megabytesPerSecond, unit: 'MB/s', note: 'first event received → last' },
      { benchmark: b, metric: 'last byte printed → last event received', value: r.lagAfterLastByteMs, unit: 'ms', note: 'container exit → last event at the receiver' },
      {
        benchmark: b, metric: 'bytes received / printed', value: r.bytesReceived / (r.megabytesPrinted * 1024 * 1024), unit: 'x',
        note: 'completeness: >= 1 (a line cut into two events counts its line ending twice)',
      },
    ];
  },
};
