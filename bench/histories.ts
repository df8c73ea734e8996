// Reads session workflows' histories (every run of a continue-as-new chain) for what the server saw:
// how long a heartbeat signal waited for the workflow task that handled it, and what a session costs
// in Temporal actions and history events. Timestamps are the server's own event times.
import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';

type Event = temporal.api.history.v1.IHistoryEvent;

const ms = (t: Event['eventTime']) => (t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0);

/** Every event of every run of the workflow, oldest run first (walked back from the current run). */
export async function chainEvents(client: Client, workflowId: string): Promise<{ runs: number; events: Event[] }> {
  const runs: Event[][] = [];
  let runId: string | undefined;
  for (;;) {
    const h = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events = h.events ?? [];
    runs.unshift(events);
    const previous = events[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId;
    if (!previous) break;
    runId = previous;
  }
  return { runs: runs.length, events: runs.flat() };
}

export interface WindowStats {
  /** heartbeat signal → the next WorkflowTaskCompleted, ms, for each heartbeat signalled in the window. */
  heartbeatToTask: number[];
  /** When each of those heartbeats was signalled (epoch ms, server time). */
  heartbeatAt: number[];
  heartbeats: number;
  /** Events whose time is in the window, and what Temporal counts as actions among them. */
  events: number;
  actions: { signals: number; timers: number; activities: number; searchAttributeUpserts: number; markers: number; continueAsNew: number };
}

/** What happened in [fromMs, toMs) of a session's history. */
export function windowStats(events: Event[], fromMs: number, toMs: number): WindowStats {
  const s: WindowStats = {
    heartbeatToTask: [], heartbeatAt: [], heartbeats: 0, events: 0,
    actions: { signals: 0, timers: 0, activities: 0, searchAttributeUpserts: 0, markers: 0, continueAsNew: 0 },
  };
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    const at = ms(e.eventTime);
    if (at < fromMs || at >= toMs) continue;
    s.events++;
    if (e.workflowExecutionSignaledEventAttributes) {
      s.actions.signals++;
      if (e.workflowExecutionSignaledEventAttributes.signalName === 'heartbeat') {
        s.heartbeats++;
        const done = events.slice(i + 1).find((x) => x.workflowTaskCompletedEventAttributes);
        // A continue-as-new may hand the signal to the next run's first task: the chain is flat here.
        if (done) {
          s.heartbeatToTask.push(ms(done.eventTime) - at);
          s.heartbeatAt.push(at);
        }
      }
    }
    if (e.timerStartedEventAttributes) s.actions.timers++;
    if (e.activityTaskScheduledEventAttributes) s.actions.activities++;
    if (e.upsertWorkflowSearchAttributesEventAttributes) s.actions.searchAttributeUpserts++;
    if (e.markerRecordedEventAttributes) s.actions.markers++;
    if (e.workflowExecutionContinuedAsNewEventAttributes) s.actions.continueAsNew++;
  }
  return s;
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  }));
  return out;
}
