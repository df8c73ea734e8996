import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { selfSigned, startReceiver } from '../bench/drains.js';
import { drainShell, openPortalShell, waitForShellOutput, type PortalTarget } from '../cli/portal-client.js';
import type { Principal } from '../services/auth.js';
import { DEMO_PROMPT } from '../server/seed.js';
import { apiCall, apiOk, endSession } from './api-client.js';
import { echoTimer, openSession } from './portal-echo.js';
import { percentile } from './stats.js';
import type { BenchModule, BenchRow } from './types.js';

const LINES = Number(process.env.ESSH_BENCH_REDACTION_LINES ?? 200);
const IDLE_SAMPLES = 120;
const SAMPLE_EVERY_MS = 50;
/** Slowest first: the first the API accepts is the worst rule the limits allow on this machine. */
const CANDIDATE_RULES = [200, 160, 120, 100, 80, 60, 40, 20].map((n) => `[A-Za-z0-9]{${n}}`);

export const redactionIsolation: BenchModule = {
  name: 'redaction-isolation',
  description: `keystroke echo of account B while account A, with the slowest redaction rule the limits allow, prints ${LINES} lines of 16 KB to a drain`,
  async run(ctx) {
    const b = 'redaction-isolation';
    const operator: Principal = { id: 0, name: 'Benchmark', email: 'bench@example.com', role: 'operator', accountIds: [] };
    const op = await ctx.runtime.admin.users.create(operator, {
      name: 'Bench operator', email: `bench-op-${randomBytes(3).toString('hex')}@example.com`, role: 'operator', accounts: [],
    });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-redaction-bench-'));
    const { cert, key } = await selfSigned(dir);
    const receiver = await startReceiver(cert, key);
    const a = await ctx.createTenant({ maxConcurrentSessions: 2 });
    const bTenant = await ctx.createTenant({ maxConcurrentSessions: 2 });
    try {
      await apiOk(ctx, 'POST', `/accounts/${a.account}/log_drains`, op.token, {
        handle: 'bench', drain_type: 'https', url: `https://127.0.0.1:${receiver.port}/`, ca_cert: cert,
      });
      let rule: string | undefined;
      for (const pattern of CANDIDATE_RULES) {
        const r = await apiCall(ctx, 'POST', `/accounts/${a.account}/redaction_rules`, op.token, { name: 'slow', pattern });
        if (r.status === 201) {
          rule = pattern;
          break;
        }
      }
      if (!rule) throw new Error('no candidate rule was accepted');
      ctx.progress(`${b}: account A's rule ${rule}`);

      const typist = await openSession(ctx, bTenant.app, bTenant.token, {}, true);
      await waitForShellOutput(typist.shell, DEMO_PROMPT);
      // The redaction workers the rule checks started are warm before the baseline is taken.
      await sleep(5000);
      const echo = echoTimer(typist.shell);
      const idle: number[] = [];
      for (let i = 0; i < IDLE_SAMPLES; i++) {
        idle.push(await echo());
        await sleep(SAMPLE_EVERY_MS);
      }

      // A prints lines of letters, what keeps its rule busiest, and its host redacts them for the drain.
      const created = await apiOk<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${a.app}/sessions`, a.token, {
        command: ['sh', '-c', `i=0; while [ $i -lt ${LINES} ]; do head -c 16000 /dev/zero | tr '\\0' a; echo; i=$((i+1)); done`],
      });
      receiver.watch(created.id, 1);
      const printer = await openPortalShell(created.connect, { pty: null });
      printer.channel.end();
      const printed = drainShell(printer);
      const startedAt = performance.now();
      let delivered = false;
      const drained = receiver.ended(600_000).then(() => (delivered = true));
      const busy: number[] = [];
      while (!delivered && performance.now() - startedAt < 120_000) {
        busy.push(await echo());
        await sleep(SAMPLE_EVERY_MS);
      }
      const client = await printed;
      printer.close();
      await drained;
      const deliveredS = (performance.now() - startedAt) / 1000;
      typist.shell.close();
      await endSession(ctx, typist.id, bTenant.token);
      const ends = await ctx.runtime.db.selectFrom('operations').select(['id', 'end_reason']).where('id', 'in', [created.id, typist.id]).execute();
      const disconnects = ends.filter((e) => e.end_reason === 'disconnect').length;
      const withheld = await ctx.runtime.db.selectFrom('redaction_rules').select('withheld_records')
        .innerJoin('accounts', 'accounts.id', 'redaction_rules.account_id').where('accounts.handle', '=', a.account).executeTakeFirst();
      const ratio = percentile(busy, 99) / percentile(idle, 99);
      ctx.progress(`${b}: B's echo idle p99 ${percentile(idle, 99).toFixed(1)} ms, while A's rule works p99 ${percentile(busy, 99).toFixed(1)} ms (${ratio.toFixed(2)}x)`);
      const rows: BenchRow[] = [
        { benchmark: b, metric: "A's rule", value: Number(/\{(\d+)\}/.exec(rule)![1]), unit: 'chars', note: `${rule}: the slowest of ${CANDIDATE_RULES.length} candidates the API accepted` },
        { benchmark: b, metric: "B's echo idle p50", value: percentile(idle, 50), unit: 'ms', note: `baseline: ${IDLE_SAMPLES} keystrokes, nothing else running` },
        { benchmark: b, metric: "B's echo idle p99", value: percentile(idle, 99), unit: 'ms' },
        { benchmark: b, metric: "B's echo while A's output is redacted p50", value: percentile(busy, 50), unit: 'ms', note: `${busy.length} keystrokes` },
        { benchmark: b, metric: "B's echo while A's output is redacted p99", value: percentile(busy, 99), unit: 'ms' },
        { benchmark: b, metric: 'ratio p99 busy / idle', value: ratio, unit: 'x', note: ratio <= 2 ? 'target <= 2 met' : 'target <= 2 NOT met' },
        { benchmark: b, metric: 'ratio p50 busy / idle', value: percentile(busy, 50) / percentile(idle, 50), unit: 'x' },
        { benchmark: b, metric: "A's output: printed → all at the drain", value: deliveredS, unit: 's', note: `${client.bytes} bytes, exit ${client.exitCode}` },
        { benchmark: b, metric: 'records withheld (over budget)', value: Number(withheld?.withheld_records ?? 0), unit: 'records' },
        { benchmark: b, metric: "sessions ended 'disconnect'", value: disconnects, unit: 'sessions', note: disconnects === 0 ? 'target 0 met' : 'target 0 NOT met' },
      ];
      return rows;
    } finally {
      await receiver.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
