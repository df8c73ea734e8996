import { performance } from 'node:perf_hooks';
import { apiCall, endSessions, sleep, waitForState } from './api-client.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const CLIENTS = Number(process.env.ESSH_BENCH_CREATE_CLIENTS ?? 50);
const PER_CLIENT = Number(process.env.ESSH_BENCH_CREATE_PER_CLIENT ?? 1);
const SEQUENTIAL = Number(process.env.ESSH_BENCH_CREATE_SEQUENTIAL ?? 10);
const SLOT_RUNS = Number(process.env.ESSH_BENCH_SLOT_RUNS ?? 10);
const SLOT_POLL_MS = 20;
const B = 'create-throughput';

interface Burst {
  latencies: number[];
  seconds: number;
  ids: number[];
}

/** `clients` callers in parallel, each making `perClient` calls one after another. */
async function burst(
  clients: number, perClient: number, call: () => Promise<{ status: number; body: any }>, expect: number,
  /** Every session id made, also when the burst fails, so that the caller can end them. */
  made?: Set<number>,
): Promise<Burst> {
  const latencies: number[] = [];
  const ids: number[] = [];
  const errors: string[] = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let i = 0; i < perClient; i++) {
      const t0 = performance.now();
      const r = await call();
      latencies.push(performance.now() - t0);
      if (r.status !== expect) errors.push(`${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      else if (typeof r.body?.id === 'number') {
        ids.push(r.body.id);
        made?.add(r.body.id);
      }
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  if (errors.length) throw new Error(`${errors.length} calls failed, e.g. ${errors[0]}`);
  return { latencies, seconds, ids };
}

/**
 * On a limit-1 account: a session holds the slot; from `POST terminate`, how long until its record says
 * ended, and until a create succeeds again. The new session holds the slot for the next round.
 */
async function slotFreeTimes(ctx: BenchContext, app: string, token: string) {
  const ended: number[] = [];
  const free: number[] = [];
  const create = () => apiCall(ctx, 'POST', `/apps/${app}/sessions`, token, {});
  const first = await create();
  if (first.status !== 201) throw new Error(`creating the first session: ${first.status} ${JSON.stringify(first.body)}`);
  let holder: number = first.body.id;
  /** Creates until the plan lets a session in; anything but the plan-limit 429 is an error. */
  const createOnceFree = async (t0: number, held: number) => {
    for (;;) {
      const r = await create();
      if (r.status === 201) return { id: r.body.id as number, freeMs: performance.now() - t0 };
      if (r.status !== 429 || r.body.error !== 'plan_limit') throw new Error(`create while the slot is held: ${r.status} ${JSON.stringify(r.body)}`);
      if (performance.now() - t0 > 120_000) throw new Error(`the slot of session ${held} was not free 120 s after terminate`);
      await sleep(SLOT_POLL_MS);
    }
  };
  const all = new Set<number>([holder]);
  try {
    for (let i = 0; i < SLOT_RUNS; i++) {
      await waitForState(ctx, holder, ['waiting_for_client']);
      const t0 = performance.now();
      const term = await apiCall(ctx, 'POST', `/sessions/${holder}/terminate`, token, {});
      if (term.status >= 300) throw new Error(`terminate ${holder}: ${term.status} ${JSON.stringify(term.body)}`);
      const watching = { stop: false };
      const endedWatch = (async () => {
        while (!watching.stop) {
          const s = await apiCall(ctx, 'GET', `/sessions/${holder}`, token);
          if (s.body.state === 'ended') return performance.now() - t0;
          if (performance.now() - t0 > 120_000) throw new Error(`session ${holder} has not ended 120 s after terminate`);
          await sleep(SLOT_POLL_MS);
        }
        return NaN;
      })();
      // Handled below; if the create loop fails first, this must not become an unhandled rejection.
      endedWatch.catch(() => undefined);
      let next: { id: number; freeMs: number };
      try {
        next = await createOnceFree(t0, holder);
      } catch (err) {
        watching.stop = true;
        throw err;
      }
      all.add(next.id);
      ended.push(await endedWatch);
      free.push(next.freeMs);
      ctx.progress(`${B} slot ${i + 1}/${SLOT_RUNS}: ended after ${ended.at(-1)!.toFixed(0)} ms, slot free after ${next.freeMs.toFixed(0)} ms`);
      holder = next.id;
    }
  } finally {
    await endSessions(ctx, all, token);
  }
  return { ended, free };
}

export const createThroughput: BenchModule = {
  name: 'create-throughput',
  description: `session creates from ${CLIENTS} parallel clients on one account (beside ${CLIENTS} parallel GET /me), and terminate → slot free`,
  async run(ctx) {
    const rows: BenchRow[] = [];
    const wide = await ctx.createTenant({ maxConcurrentSessions: CLIENTS * PER_CLIENT + SEQUENTIAL + 10 });
    const created = new Set<number>();
    const createCall = () => apiCall(ctx, 'POST', `/apps/${wide.app}/sessions`, wide.token, {});
    try {
      // Warm the route, the DB and the Temporal client once.
      await burst(1, 1, createCall, 201, created);

      const me = await burst(CLIENTS, PER_CLIENT, () => apiCall(ctx, 'GET', '/me', wide.token), 200);
      const parallel = await burst(CLIENTS, PER_CLIENT, createCall, 201, created);
      ctx.progress(`${B}: ${parallel.ids.length} parallel creates in ${parallel.seconds.toFixed(2)} s; ending them`);
      const endStarted = performance.now();
      await endSessions(ctx, parallel.ids, wide.token);
      const endAllS = (performance.now() - endStarted) / 1000;
      parallel.ids.forEach((id) => created.delete(id));

      const sequential = await burst(1, SEQUENTIAL, createCall, 201, created);

      const n = CLIENTS * PER_CLIENT;
      const rate = n / parallel.seconds;
      const meRate = n / me.seconds;
      const seqRate = SEQUENTIAL / sequential.seconds;
      rows.push(
        { benchmark: B, metric: `creates/s, ${CLIENTS} parallel clients`, value: rate, unit: '/s', note: `${n} POST /apps/{app}/sessions, one account` },
        { benchmark: B, metric: 'parallel create latency p50', value: percentile(parallel.latencies, 50), unit: 'ms' },
        { benchmark: B, metric: 'parallel create latency p95', value: percentile(parallel.latencies, 95), unit: 'ms' },
        { benchmark: B, metric: `GET /me/s, ${CLIENTS} parallel clients`, value: meRate, unit: '/s', note: 'baseline: authenticated read, same API' },
        { benchmark: B, metric: 'parallel GET /me latency p50', value: percentile(me.latencies, 50), unit: 'ms' },
        { benchmark: B, metric: 'parallel GET /me latency p95', value: percentile(me.latencies, 95), unit: 'ms' },
        { benchmark: B, metric: 'ratio creates/s / GET /me/s', value: rate / meRate, unit: 'x' },
        { benchmark: B, metric: 'creates/s, one client sequential', value: seqRate, unit: '/s', note: `baseline 2: ${SEQUENTIAL} creates one after another` },
        { benchmark: B, metric: 'sequential create latency p50', value: percentile(sequential.latencies, 50), unit: 'ms' },
        { benchmark: B, metric: 'ratio parallel / sequential creates/s', value: rate / seqRate, unit: 'x' },
        { benchmark: B, metric: `terminate ${n} → all ended`, value: endAllS, unit: 's', note: 'all terminated at once, right after the burst' },
      );
    } finally {
      await endSessions(ctx, created, wide.token);
    }

    const narrow = await ctx.createTenant({ maxConcurrentSessions: 1 });
    const slot = await slotFreeTimes(ctx, narrow.app, narrow.token);
    for (const p of [50, 95]) {
      rows.push({ benchmark: B, metric: `terminate → state ended p${p}`, value: percentile(slot.ended, p), unit: 'ms', note: p === 50 ? `limit-1 account, ${SLOT_RUNS} sessions, GET polled every ${SLOT_POLL_MS} ms` : undefined });
    }
    for (const p of [50, 95]) {
      rows.push({ benchmark: B, metric: `terminate → next create 201 p${p}`, value: percentile(slot.free, p), unit: 'ms', note: p === 50 ? 'slot free: a create on the limit-1 account succeeds' : undefined });
    }
    return rows;
  },
};
