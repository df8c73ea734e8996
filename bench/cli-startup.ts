import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { percentile } from './stats.js';
import type { BenchRow, StandaloneBenchModule } from './types.js';

const ESSH_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'essh.js');
const RUNS = Number(process.env.ESSH_BENCH_CLI_RUNS ?? 40);

/** What is timed: Node's own start as the baseline, then the CLI's cheapest commands, which only start it. */
const COMMANDS: { label: string; args: string[] }[] = [
  { label: 'node -e 0', args: ['-e', '0'] },
  { label: 'essh --version', args: [ESSH_BIN, '--version'] },
  { label: 'essh --help', args: [ESSH_BIN, '--help'] },
];

/** Wall time of one run, from spawn to exit (stdout read and thrown away). */
function timeRun(args: string[]): number {
  const started = performance.now();
  const run = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  const ms = performance.now() - started;
  if (run.status !== 0) throw new Error(`node ${args.join(' ')} exited with ${run.status}: ${run.stderr}`);
  return ms;
}

export const cliStartup: StandaloneBenchModule = {
  name: 'cli-startup',
  description: `essh --version and --help against node -e 0, ${RUNS} interleaved runs each (needs no stack)`,
  standalone: true,
  async run(ctx) {
    // The first start after a change builds the bundle and its code cache; the figures are the starts after.
    for (const c of COMMANDS) timeRun(c.args);
    const samples = COMMANDS.map(() => [] as number[]);
    // Interleaved, so a machine busy for a moment weighs on every command alike.
    for (let i = 0; i < RUNS; i++) COMMANDS.forEach((c, j) => samples[j]!.push(timeRun(c.args)));
    const [node, ...cli] = samples.map((s) => ({ min: Math.min(...s), p50: percentile(s, 50), p95: percentile(s, 95) }));
    ctx.progress(`node -e 0: min ${node!.min.toFixed(1)} ms, p50 ${node!.p50.toFixed(1)} ms`);
    const rows: BenchRow[] = [
      { benchmark: 'cli-startup', metric: 'node -e 0 p50', value: node!.p50, unit: 'ms', note: `baseline: Node's own start, min ${node!.min.toFixed(1)} ms` },
    ];
    cli.forEach((s, j) => {
      const label = COMMANDS[j + 1]!.label;
      rows.push(
        { benchmark: 'cli-startup', metric: `${label} p50`, value: s.p50, unit: 'ms', note: `p95 ${s.p95.toFixed(1)} ms, min ${s.min.toFixed(1)} ms` },
        { benchmark: 'cli-startup', metric: `${label} p50 / node -e 0 p50`, value: s.p50 / node!.p50, unit: 'x', note: `min/min ${(s.min / node!.min).toFixed(2)}x; over Node's start: ${(s.p50 - node!.p50).toFixed(1)} ms at p50` },
      );
    });
    return rows;
  },
};
