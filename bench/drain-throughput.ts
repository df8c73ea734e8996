import { randomBytes } from 'node:crypto';
import { benchDrainThroughput, benchShipperThroughput } from './drains.js';
import { loadSecretBox } from '../lib/secrets.js';
import type { Principal } from '../services/auth.js';
import { DEMO_IMAGE } from '../server/seed.js';
import type { BenchModule, BenchRow } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_DRAIN_MB ?? 50);
/** The portal's pace for the paced run (MB/s): about what it carries on the 2-core test machine. */
const PACE_MBPS = Number(process.env.ESSH_BENCH_DRAIN_PACE_MBPS ?? 20);
/** End to end (on unless ESSH_BENCH_DRAIN_E2E=0): a session printing to its client through the portal, its host shipping the journal. */
const END_TO_END = process.env.ESSH_BENCH_DRAIN_E2E !== '0';

export const drainThroughput: BenchModule = {
  name: 'drain-throughput',
  description: `${MEGABYTES} MB of 100-byte lines from a session's journal to an HTTPS drain on loopback (bench/drains.ts)`,
  async run(ctx) {
    const b = 'drain-throughput';
    const rows: BenchRow[] = [];
    const secrets = await loadSecretBox({ dataDir: ctx.runtime.config.dataDir, keyBase64: ctx.runtime.config.secretsKey });
    for (const pacedMBps of [0, PACE_MBPS]) {
      ctx.progress(`drain-throughput: host shipper, journal written ${pacedMBps ? `at ${pacedMBps} MB/s` : 'at full speed'}`);
      const r = await benchShipperThroughput({ db: ctx.runtime.db, secrets, megabytes: MEGABYTES, pacedMBps });
      const how = pacedMBps ? `journal written at ${pacedMBps} MB/s (${r.writeSeconds} s)` : `journal written at once (${r.writeSeconds} s)`;
      rows.push(
        { benchmark: b, metric: `shipper, ${pacedMBps ? 'paced' : 'burst'}: output events delivered`, value: r.eventsPerSecond, unit: 'events/s', note: `${r.outputEvents} events, ${r.requests} HTTPS requests; ${how}` },
        { benchmark: b, metric: `shipper, ${pacedMBps ? 'paced' : 'burst'}: output delivered`, value: r.megabytesPerSecond, unit: 'MB/s', note: 'first event received → last' },
        { benchmark: b, metric: `shipper, ${pacedMBps ? 'paced' : 'burst'}: last byte appended → last event received`, value: r.lagAfterLastByteMs, unit: 'ms', note: 'the end-to-end row below carries the target' },
      );
    }
    if (END_TO_END) {
      // bench/drains.ts sets up its own account, app and drain through the API, which takes an operator.
      const operator: Principal = { id: 0, name: 'Benchmark', email: 'bench@example.com', role: 'operator', accountIds: [] };
      const suffix = randomBytes(3).toString('hex');
      const user = await ctx.runtime.admin.users.create(operator, { name: `Bench operator ${suffix}`, email: `bench-op-${suffix}@example.com`, role: 'operator', accounts: [] });
      const r = await benchDrainThroughput({ apiUrl: ctx.apiUrl, operatorToken: user.token, image: DEMO_IMAGE, stack: 'local', megabytes: MEGABYTES });
      rows.push(
        { benchmark: b, metric: 'end to end: output events delivered', value: r.eventsPerSecond, unit: 'events/s', note: `${r.outputEvents} events, ${r.requests} HTTPS requests, ${r.megabytesPrinted} MB printed` },
        { benchmark: b, metric: 'end to end: output delivered', value: r.megabytesPerSecond, unit: 'MB/s', note: 'first event received → last' },
        {
          benchmark: b, metric: 'end to end: last byte printed → last event received', value: r.lagAfterLastByteMs, unit: 'ms',
          note: `${r.lagAfterLastByteMs <= 1000 ? 'target <= 1000 (issue 20) met' : 'target <= 1000 (issue 20) NOT met'}; last byte at the client (ssh2, no PTY; ${r.megabytesPrinted} MB in ${r.clientSeconds} s) → last output event at the receiver`,
        },
        {
          benchmark: b, metric: 'end to end: bytes received / printed', value: r.bytesReceived / (r.megabytesPrinted * 1024 * 1024), unit: 'x',
          note: 'completeness: >= 1 (a line cut into two events counts its line ending twice)',
        },
      );
    }
    return rows;
  },
};
