import { Counter, Gauge, type Registry } from 'prom-client';
import type { Db } from '../lib/db.js';
import { drainBacklogs } from './service.js';

interface DrainFigures {
  id: number;
  type: string;
  backlog: number;
  paused: number;
  delivered: number;
  failed: number;
  lastSuccess: number | null;
}

/**
 * Delivery figures of every drain, read from the database at each scrape (the shipper may run in
 * another process). Labelled by drain id and type only, never the account's name: tenants' names stay out
 * of the metrics, whoever may read them.
 */
export function registerDrainMetrics(registry: Registry, db: Db) {
  // One read per scrape serves all the series.
  let reading: Promise<DrainFigures[]> | null = null;
  const figures = () => {
    reading ??= readDrainFigures(db).finally(() => setTimeout(() => (reading = null), 0));
    return reading;
  };
  const labelNames = ['drain_id', 'drain_type'] as const;
  type Label = (typeof labelNames)[number];
  const fill = async (metric: Gauge<Label> | Counter<Label>, value: (d: DrainFigures) => number | null) => {
    metric.reset();
    for (const d of await figures()) {
      const v = value(d);
      if (v === null) continue;
      const labels = { drain_id: String(d.id), drain_type: d.type };
      if (metric instanceof Gauge) metric.set(labels, v);
      else metric.inc(labels, v);
    }
  };
  const registers = [registry];
  const drainSeries = (Metric: typeof Gauge | typeof Counter, name: string, help: string, value: (d: DrainFigures) => number | null) =>
    new Metric<Label>({ name, help, labelNames, registers, collect() { return fill(this, value); } });
  drainSeries(Gauge, 'essh_drain_backlog_bytes', 'Journal bytes of session output the hosts have not yet delivered to the drain', (d) => d.backlog);
  drainSeries(Gauge, 'essh_drain_paused', '1 while the drain is paused (its receiver refused our credentials or target: 401/403/404)', (d) => d.paused);
  drainSeries(Counter, 'essh_drain_delivered_events_total', 'Events the drain accepted', (d) => d.delivered);
  drainSeries(Counter, 'essh_drain_failed_events_total', 'Events the drain refused for good (permanent 4xx)', (d) => d.failed);
  drainSeries(Gauge, 'essh_drain_last_success_timestamp_seconds', 'When the drain last accepted a batch', (d) => d.lastSuccess);
  new Counter({
    name: 'essh_redaction_withheld_records_total',
    help: 'Output records withheld (not shipped, not recorded) because the redaction rule took longer than its time budget on them',
    labelNames: ['rule_id'], registers,
    async collect() {
      this.reset();
      const rows = await db.selectFrom('redaction_rules').select(['id', 'withheld_records']).where('withheld_records', '>', 0).execute();
      for (const r of rows) this.inc({ rule_id: String(r.id) }, Number(r.withheld_records));
    },
  });
}

async function readDrainFigures(db: Db): Promise<DrainFigures[]> {
  const drains = await db.selectFrom('log_drains').selectAll().execute();
  const backlogs = await drainBacklogs(db);
  return drains.map((d) => ({
    id: Number(d.id),
    type: d.drain_type,
    backlog: d.drain_ephemeral_sessions ? (backlogs.get(Number(d.id))?.bytes ?? 0) : 0,
    paused: d.status === 'paused' ? 1 : 0,
    delivered: Number(d.delivered_events),
    failed: Number(d.failed_events),
    lastSuccess: d.last_success_at ? Date.parse(d.last_success_at) / 1000 : null,
  }));
}
