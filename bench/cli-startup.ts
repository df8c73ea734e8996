import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { percentile } from './stats.js';
import type { BenchRow, StandaloneBenchModule } from './types.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin');
const RUNS = Number(process.env.ESSH_BENCH_CLI_RUNS ?? 40);
const extraCaCerts = process.env.NODE_EXTRA_CA_CERTS;

interface Timed {
  label: string;
  /** bin/essh, else node itself. */
  essh?: boolean;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

// NODE_OPTIONS emptied: the bench's own (tsx's) must not weigh on the processes it times.
const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
const withoutExtraCas: NodeJS.ProcessEnv = { ...env };
delete withoutExtraCas.NODE_EXTRA_CA_CERTS;

const NODE: Timed = { label: 'node -e 0', args: ['-e', '0'] };
/** What is timed: the command as the README puts it on PATH (bin/essh), its cheapest commands. */
const ESSH: Timed[] = [
  { label: 'essh --version', essh: true, args: ['--version'] },
  { label: 'essh help', essh: true, args: ['help'] },
];
/**
 * For where the time goes: Node's start without NODE_EXTRA_CA_CERTS (which makes Node 20 build its
 * root certificate store before any JavaScript runs, and which bin/essh keeps from it), and the CLI's
 * JavaScript entry run by node directly, as `#!/usr/bin/env node` would.
 */
const EXPLAIN: Timed[] = [
  ...(extraCaCerts ? [{ label: 'node -e 0 without NODE_EXTRA_CA_CERTS', args: ['-e', '0'], env: withoutExtraCas }] : []),
  { label: 'node bin/essh.js --version', args: [path.join(BIN, 'essh.js'), '--version'] },
];

/** Wall time of one run, from spawn to exit (stdout read and thrown away). */
function timeRun(t: Timed): number {
  const started = performance.now();
  const run = spawnSync(t.essh ? path.join(BIN, 'essh') : process.execPath, t.args, { stdio: ['ignore', 'pipe', 'pipe'], env: t.env ?? env });
  const ms = performance.now() - started;
  if (run.status !== 0) throw new Error(`${t.label} exited with ${run.status}: ${run.stderr}`);
  return ms;
}

export const cliStartup: StandaloneBenchModule = {
  name: 'cli-startup',
  description: `essh --version and essh help (bin/essh, as on PATH) against node -e 0, ${RUNS} interleaved runs each (needs no stack)`,
  standalone: true,
  async run(ctx) {
    const all = [NODE, ...ESSH, ...EXPLAIN];
    // The first start after a change builds the bundle and its code cache; the figures are the starts after.
    for (const t of all) timeRun(t);
    const samples = all.map(() => [] as number[]);
    // Interleaved, so a machine busy for a moment weighs on every command alike.
    for (let i = 0; i < RUNS; i++) all.forEach((t, j) => samples[j]!.push(timeRun(t)));
    const stats = samples.map((s) => ({ min: Math.min(...s), p50: percentile(s, 50), p95: percentile(s, 95) }));
    const node = stats[0]!;
    ctx.progress(`node -e 0: min ${node.min.toFixed(1)} ms, p50 ${node.p50.toFixed(1)} ms${extraCaCerts ? ' (NODE_EXTRA_CA_CERTS is set)' : ''}`);
    const rows: BenchRow[] = [{
      benchmark: 'cli-startup', metric: 'node -e 0 p50', value: node.p50, unit: 'ms',
      note: `baseline: Node's own start, p95 ${node.p95.toFixed(1)} ms, min ${node.min.toFixed(1)} ms${extraCaCerts ? `; NODE_EXTRA_CA_CERTS=${extraCaCerts} as in this environment` : ''}`,
    }];
    const bareNode = extraCaCerts ? stats[1 + ESSH.length]! : node;
    all.slice(1).forEach((t, k) => {
      const s = stats[k + 1]!;
      const essh = k < ESSH.length;
      rows.push({ benchmark: 'cli-startup', metric: `${t.label} p50`, value: s.p50, unit: 'ms', note: `p95 ${s.p95.toFixed(1)} ms, min ${s.min.toFixed(1)} ms${essh ? '; target ≤ 40 ms' : ''}` });
      if (!essh) return;
      rows.push(
        {
          benchmark: 'cli-startup', metric: `${t.label} p50 / node -e 0 p50`, value: s.p50 / node.p50, unit: 'x',
          note: `${(s.p50 - bareNode.p50).toFixed(1)} ms at p50 over Node's start${extraCaCerts ? ' without NODE_EXTRA_CA_CERTS' : ''}`,
        },
        { benchmark: 'cli-startup', metric: `${t.label} p95 / node -e 0 p95`, value: s.p95 / node.p95, unit: 'x' },
      );
    });
    return rows;
  },
};
