import { timingSafeEqual, createHash } from 'node:crypto';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from './db.js';

/**
 * Prometheus metrics (prom-client: the de-facto Node client, with Node's process metrics built in).
 * Every essh process has one registry (`createMetrics`), served by its metrics listener
 * (lib/metrics-server.ts) and, in an API process, by the API's `/metrics` (behind ESSH_METRICS_TOKEN).
 * The parts a process runs add their own figures to it: the database's view (`registerDbMetrics`, API
 * processes), the host's (host/metrics.ts), the Temporal SDK's (appended, lib/temporal.ts).
 * docs/operations.md lists every metric with who records it.
 *
 * Labels carry ids, states, reasons and stack names: never an account's or a user's name.
 */

const OPEN_STATES = ['provisioning', 'waiting_for_client', 'active', 'ending'] as const;

/**
 * Counters bumped deep in the code wherever it runs (an activity, the journal writer, the reconciler):
 * one per process, shown by every registry of the process.
 */
export const processCounters = {
  sessionsEnded: new Counter({
    name: 'essh_sessions_ended_total',
    help: 'Sessions this process recorded as ended, by end reason (the main worker records the workflows\' ends; the API and the reconciler those no workflow could)',
    labelNames: ['end_reason'],
    registers: [],
  }),
  journalBytes: new Counter({
    name: 'essh_journal_written_bytes_total',
    help: 'Bytes appended to session output journals on this host (records and their headers)',
    registers: [],
  }),
};

export function createMetrics() {
  const registry = new Registry();
  // Node's standard names (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, …): dashboards for Node work as they are.
  collectDefaultMetrics({ register: registry });
  for (const c of Object.values(processCounters)) registry.registerMetric(c);
  return {
    registry,
    sessionsCreated: new Counter({
      name: 'essh_sessions_created_total', help: 'Sessions accepted (API and SSH portal), by stack', labelNames: ['stack'], registers: [registry],
    }),
    sessionCreateRejected: new Counter({
      name: 'essh_session_create_rejected_total',
      help: 'Session creations refused, by the error code answered (plan_limit, rate_limited, invalid_request, forbidden, not_found, unavailable, …)',
      labelNames: ['reason'], registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'essh_http_request_duration_seconds',
      help: 'API request durations, by method, route (its OpenAPI path, or "unmatched") and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

/**
 * The figures read from the database at each scrape, so they are right whichever process runs the
 * workflows and hosts: registered by API processes only (several API replicas report the same values:
 * aggregate them with max, not sum).
 */
export function registerDbMetrics(registry: Registry, db: Db) {
  new Gauge({
    name: 'essh_sessions', help: 'Sessions not yet ended, by state', labelNames: ['state'], registers: [registry],
    async collect() {
      const rows = await db.selectFrom('operations').select(['state', (eb) => eb.fn.countAll<number>().as('n')])
        .where('state', 'in', [...OPEN_STATES]).groupBy('state').execute();
      for (const state of OPEN_STATES) this.set({ state }, Number(rows.find((r) => r.state === state)?.n ?? 0));
    },
  });
  new Gauge({
    name: 'essh_host_last_seen_timestamp_seconds',
    help: 'When each stack host last reported itself (every reconcile interval); a host silent for a minute takes no new session',
    labelNames: ['host_id'], registers: [registry],
    async collect() {
      this.reset();
      for (const h of await db.selectFrom('hosts').select(['host_id', 'seen_at']).execute()) {
        this.set({ host_id: h.host_id }, Date.parse(h.seen_at) / 1000);
      }
    },
  });
}

/** Whether `presented` (an Authorization header) carries `token` as its bearer, compared in constant time. */
export function bearerMatches(presented: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(presented ?? '');
  if (!m) return false;
  // Equal-length digests, so neither the comparison nor its length check tells anything of the token.
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(m[1]!), digest(token));
}
