import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics (prom-client: the de-facto Node client, with process metrics built in). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'essh_' });
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
