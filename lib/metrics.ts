import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from './db.js';

const OPEN_STATES = ['provisioning', 'waiting_for_client', 'active', 'ending'] as const;

/**
 * Prometheus metrics (prom-client: the de-facto Node client, with process metrics built in). With a
 * database, the open sessions by state are read from it at each scrape, so the figure is right
 * whichever process runs the workflows.
 */
export function createMetrics(db?: Db) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'essh_' });
  if (db) {
    new Gauge({
      name: 'essh_sessions', help: 'Sessions not yet ended, by state', labelNames: ['state'], registers: [registry],
      async collect() {
        const rows = await db.selectFrom('operations').select(['state', (eb) => eb.fn.countAll<number>().as('n')])
          .where('state', 'in', [...OPEN_STATES]).groupBy('state').execute();
        for (const state of OPEN_STATES) this.set({ state }, Number(rows.find((r) => r.state === state)?.n ?? 0));
      },
    });
  }
  return {
    registry,
    sessionsCreated: new Counter({
      name: 'essh_sessions_created_total', help: 'Sessions created through the API', labelNames: ['app'], registers: [registry],
    }),
    sessionCreateRejected: new Counter({
      name: 'essh_session_create_rejected_total', help: 'Session creations refused', labelNames: ['reason'], registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'essh_http_request_duration_seconds', help: 'API request durations', labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
