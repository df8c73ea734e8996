import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { temporal } from '@temporalio/proto';
import type Docker from 'dockerode';
import { LABELS } from '../lib/docker.js';
import { DEMO_IMAGE } from '../server/seed.js';
import { describeQuery, sessionWorkflowId } from '../shapes/session-workflow.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const SESSIONS = Number(process.env.ESSH_BENCH_SESSIONS ?? 24);
const WARMUP = 2;
const RECORD_POLL_MS = 20;
const MB = 1024 * 1024;


/**
 * The baseline: what it costs just to create and start the same container with dockerode, with the
 * settings activities/host.ts uses for a session (1024 MB, TTY, init, hardening, labels).
 */
async function baselineOnce(docker: Docker, name: string): Promise<number> {
  const t0 = performance.now();
  const c = await docker.createContainer({
    name,
    Image: DEMO_IMAGE,
    Env: ['APP_ENV=bench'],
    WorkingDir: '/app',
    Tty: true,
    OpenStdin: true,
    StopSignal: 'SIGHUP',
    Labels: { [LABELS.session]: 'bench-baseline', [LABELS.app]: 'bench', [LABELS.account]: 'bench', [LABELS.stack]: 'local' },
    HostConfig: {
      Memory: 1024 * MB, MemorySwap: 1024 * MB, RestartPolicy: { Name: 'no' }, Privileged: false,
      SecurityOpt: ['no-new-privileges'], PidsLimit: 512, Init: true,
    },
  });
  await c.start();
  const ms = performance.now() - t0;
  await c.remove({ force: true });
  return ms;
}

interface SessionSample {
  id: number;
  /** POST → 201. */
  apiMs: number;
  /**
   * POST → the workflow task that took the container's start and moved the workflow to
   * waiting_for_client completed (so its container is running, and `describe` says so).
   */
  readyMs: number;
  /** POST → the Operation record (what GET /sessions/{id} shows) says waiting_for_client. */
  recordReadyMs: number;
  phases: Awaited<ReturnType<typeof phases>>;
}

// Readiness comes from timestamps written by the system itself (the workflow history's event times,
// the record's updated_at) on this machine's clock, not from polling the workflow: a query is a task
// for the very worker whose latency is measured, and tight polling would slow what it measures.
async function sessionOnce(ctx: BenchContext, app: string, token: string): Promise<SessionSample> {
  const { runtime } = ctx;
  const t0 = Date.now();
  const p0 = performance.now();
  const res = await fetch(`${ctx.apiUrl}/apps/${app}/sessions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: '{}',
  });
  const body = (await res.json()) as { id: number; message?: string };
  if (res.status !== 201) throw new Error(`creating a session: ${res.status} ${body.message}`);
  const apiMs = performance.now() - p0;
  let recordReadyAt: number;
  for (;;) {
    const row = await runtime.db.selectFrom('operations').select(['state', 'end_message', 'updated_at']).where('id', '=', body.id).executeTakeFirst();
    if (row?.state === 'waiting_for_client') {
      recordReadyAt = Date.parse(row.updated_at);
      break;
    }
    if (row?.state === 'ended') throw new Error(`session ${body.id} ended before it was ready: ${row.end_message}`);
    await sleep(RECORD_POLL_MS);
  }
  const d = await runtime.client.workflow.getHandle(sessionWorkflowId(body.id)).query(describeQuery);
  if (d.state !== 'waiting_for_client') throw new Error(`session ${body.id}: the workflow says ${d.state}, the record waiting_for_client`);
  const info = await ctx.docker.getContainer(d.container_id!).inspect();
  if (!info.State.Running) throw new Error(`session ${body.id} is ready but its container is ${info.State.Status}`);
  const history = await phases(ctx, body.id);
  return { id: body.id, apiMs, readyMs: history.readyAt - t0, recordReadyMs: recordReadyAt - t0, phases: history };
}

async function endSession(ctx: BenchContext, id: number, token: string) {
  await fetch(`${ctx.apiUrl}/sessions/${id}/terminate`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
  for (;;) {
    const row = await ctx.runtime.db.selectFrom('operations').select('state').where('id', '=', id).executeTakeFirst();
    if (row?.state === 'ended') return;
    await sleep(50);
  }
}

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
const ms = (e: HistoryEvent | undefined) =>
  e?.eventTime ? Number(e.eventTime.seconds ?? 0) * 1000 + Math.round((e.eventTime.nanos ?? 0) / 1e6) : NaN;

/** Where a session's time goes before it is ready, from the server's own timestamps in its history. */
export async function phases(ctx: BenchContext, id: number) {
  const history = await ctx.runtime.client.workflow.getHandle(sessionWorkflowId(id)).fetchHistory();
  const events = history.events ?? [];
  const started = events[0];
  const scheduled = (name: string) =>
    events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === name);
  const provision = scheduled('provisionContainer');
  const provisionId = provision?.eventId?.toString();
  const of = (attr: 'activityTaskStartedEventAttributes' | 'activityTaskCompletedEventAttributes') =>
    events.find((e) => e[attr]?.scheduledEventId?.toString() === provisionId);
  const firstTask = events.find((e) => e.workflowTaskCompletedEventAttributes);
  const provisioned = of('activityTaskCompletedEventAttributes');
  const readyTask = events.find(
    (e) => e.workflowTaskCompletedEventAttributes && Number(e.eventId) > Number(provisioned?.eventId ?? Infinity),
  );
  if (!readyTask) throw new Error(`session ${id}: no workflow task completed after its container started`);
  return {
    readyAt: ms(readyTask),
    afterProvisionMs: ms(readyTask) - ms(provisioned),
    firstWorkflowTaskMs: ms(firstTask) - ms(started),
    beforeProvisionMs: ms(provision) - ms(started),
    provisionDispatchMs: ms(of('activityTaskStartedEventAttributes')) - ms(provision),
    provisionRunMs: ms(of('activityTaskCompletedEventAttributes')) - ms(of('activityTaskStartedEventAttributes')),
  };
}

export const sessionReady: BenchModule = {
  name: 'session-ready',
  description: 'API POST → container running and workflow waiting_for_client, beside dockerode create+start of the same container',
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 5 });
    const suffix = randomBytes(3).toString('hex');
    const baseline: number[] = [];
    const sessions: SessionSample[] = [];
    // Interleaved, so that both see the same machine load (others may be using it too).
    for (let i = 0; i < WARMUP + SESSIONS; i++) {
      const b = await baselineOnce(ctx.docker, `essh-bench-baseline-${suffix}-${i}`);
      const s = await sessionOnce(ctx, tenant.app, tenant.token);
      await endSession(ctx, s.id, tenant.token);
      if (i < WARMUP) continue;
      baseline.push(b);
      sessions.push(s);
      ctx.progress(`session-ready ${i - WARMUP + 1}/${SESSIONS}: ready ${s.readyMs.toFixed(0)} ms, baseline ${b.toFixed(0)} ms`);
    }
    const row = (metric: string, sample: number[], p: number, note?: string): BenchRow => ({
      benchmark: 'session-ready', metric: `${metric} p${p}`, value: percentile(sample, p), unit: 'ms', note,
    });
    const ready = sessions.map((s) => s.readyMs);
    const record = sessions.map((s) => s.recordReadyMs);
    const p50Ratio = percentile(ready, 50) / percentile(baseline, 50);
    const med = (k: Exclude<keyof SessionSample['phases'], 'readyAt'>) => percentile(sessions.map((s) => s.phases[k]), 50);
    return [
      row('session ready (workflow state)', ready, 50, `${SESSIONS} sessions`),
      row('session ready (workflow state)', ready, 95),
      row('session ready (Operation record)', record, 50),
      row('session ready (Operation record)', record, 95),
      row('baseline dockerode create+start', baseline, 50, `${SESSIONS} containers`),
      row('baseline dockerode create+start', baseline, 95),
      { benchmark: 'session-ready', metric: 'ratio p50 ready / baseline', value: p50Ratio, unit: 'x', note: p50Ratio <= 1.5 ? 'target <= 1.5 met' : 'target <= 1.5 NOT met' },
      {
        benchmark: 'session-ready', metric: 'ratio median of pairs', unit: 'x', note: 'each session over the baseline measured just before it',
        value: percentile(sessions.map((s, i) => s.readyMs / baseline[i]!), 50),
      },
      { benchmark: 'session-ready', metric: 'ratio p95 ready / baseline', value: percentile(ready, 95) / percentile(baseline, 95), unit: 'x' },
      row('API POST → 201', sessions.map((s) => s.apiMs), 50),
      { benchmark: 'session-ready', metric: 'phase: start → first workflow task done p50', value: med('firstWorkflowTaskMs'), unit: 'ms', note: 'server timestamps' },
      { benchmark: 'session-ready', metric: 'phase: start → provision scheduled p50', value: med('beforeProvisionMs'), unit: 'ms' },
      { benchmark: 'session-ready', metric: 'phase: provision dispatch p50', value: med('provisionDispatchMs'), unit: 'ms', note: 'scheduled → started' },
      { benchmark: 'session-ready', metric: 'phase: provision run p50', value: med('provisionRunMs'), unit: 'ms', note: 'docker create+start in the activity' },
      { benchmark: 'session-ready', metric: 'phase: provisioned → workflow task done p50', value: med('afterProvisionMs'), unit: 'ms' },
    ];
  },
};
