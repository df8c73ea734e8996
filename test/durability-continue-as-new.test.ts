import { WorkflowNotFoundError } from '@temporalio/client';
import { expect, it } from 'vitest';
import {
  SA, describeQuery, heartbeatSignal, sessionWorkflowId, terminateSignal, type SessionResult,
} from '../shapes/session-workflow.js';
import { containerExists, createTenant, docker, sleep, useTestStack, waitFor, waitForState } from './support/harness.js';

// test/support/global-setup.ts makes the dev server suggest continue-as-new at 300 history events.
const SUGGESTED_AT = 300;
const HEARTBEATS_PER_PHASE = 1500;
const CONNECTIONS = 50;
const IN_FLIGHT = 8;
/**
 * The stream comes in bursts with short pauses between them, as heartbeats from many connections do.
 * A workflow can only close a run (continue-as-new) in a moment when no signal is waiting for it, so a
 * stream without any pause, far beyond the portal's rate (one heartbeat per connection every 10 s),
 * would postpone the hand-over until one came.
 */
const BURST = 100;
const PAUSE_MS = 250;

// A long heartbeat timeout: the stream is the load, not a race against the disconnect timer.
const stack = useTestStack({ env: { ESSH_HEARTBEAT_TIMEOUT_S: '120' } });


it('continues as new under a stream of heartbeats: bounded history, state and deadline intact, no signal lost', async () => {
  const t = await createTenant(stack);
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const id = r.body.id as number;
  const workflowId = sessionWorkflowId(id);
  const handle = stack.runtime.client.workflow.getHandle(workflowId);
  await waitForState(stack, t.token, id, 'waiting_for_client');
  await handle.signal(heartbeatSignal, { connection_id: 'conn-0' });
  const before = await waitForState(stack, t.token, id, 'active');
  const firstRunId = (await handle.describe()).runId;

  let accepted = 1;
  let refusedAfterClose = 0;
  /** Sends heartbeats `from..to` (exclusive) with a few in flight; `midway` runs once, at its index. */
  async function stream(from: number, to: number, midway?: { at: number; send: () => Promise<void> }) {
    let next = from;
    const lane = async (end: number) => {
      while (next < end) {
        const i = next++;
        if (midway && i === midway.at) await midway.send();
        try {
          await handle.signal(heartbeatSignal, { connection_id: `conn-${i % CONNECTIONS}` });
          accepted++;
        } catch (err) {
          // Only once the terminate has closed the workflow may a heartbeat be refused.
          if (!(err instanceof WorkflowNotFoundError) || !midway) throw err;
          refusedAfterClose++;
        }
      }
    };
    for (let burstEnd = Math.min(from + BURST, to); next < to; burstEnd = Math.min(burstEnd + BURST, to)) {
      await Promise.all(Array.from({ length: IN_FLIGHT }, () => lane(burstEnd)));
      await sleep(PAUSE_MS);
    }
  }

  await stream(1, HEARTBEATS_PER_PHASE);
  const d = await handle.query(describeQuery);
  expect((await handle.describe()).runId).not.toBe(firstRunId);
  expect(d).toMatchObject({
    state: 'active',
    container_id: before.container_id,
    connected_at: before.connected_at,
    expires_at: before.expires_at,
    created_at: before.created_at,
  });
  // Every connection's heartbeats reached the current run's state, whichever run received them.
  expect([...d.connections].sort()).toEqual(Array.from({ length: CONNECTIONS }, (_, i) => `conn-${i}`).sort());
  const info = await docker.getContainer(before.container_id).inspect();
  expect(info.State.Running).toBe(true);
  expect((await stack.api.get(`/sessions/${id}`, t.token)).body).toMatchObject({ state: 'active', expires_at: before.expires_at });

  // A terminate in the middle of a second stream still ends the session, whatever run it lands in.
  await stream(HEARTBEATS_PER_PHASE, 2 * HEARTBEATS_PER_PHASE, {
    at: HEARTBEATS_PER_PHASE + HEARTBEATS_PER_PHASE / 3,
    send: () => handle.signal(terminateSignal, { reason: 'mid-stream', by: 'test' }),
  });
  const result = (await handle.result()) as SessionResult;
  expect(result).toMatchObject({ end_reason: 'terminated', end_message: 'mid-stream', ended_by: 'test' });
  expect(result.runs).toBeGreaterThanOrEqual(5);
  const ended = await waitForState(stack, t.token, id, 'ended');
  expect(ended).toMatchObject({ end_reason: 'terminated', container_id: before.container_id, expires_at: before.expires_at });
  expect(await containerExists(before.container_id)).toBe(false);
  // The last run still carries the search attributes the first was started with, and the final state.
  const last = (await handle.describe()).typedSearchAttributes;
  expect([last.get(SA.app), last.get(SA.account), last.get(SA.operationId)]).toEqual([t.app, t.account, id]);
  expect([last.get(SA.state), last.get(SA.endReason)]).toEqual(['ended', 'terminated']);

  // Every run's history, from Temporal itself.
  const runs = await waitFor('visibility to list every run', async () => {
    const found: { runId: string; continued: boolean }[] = [];
    for await (const w of stack.runtime.client.workflow.list({ query: `WorkflowId = "${workflowId}"` })) {
      found.push({ runId: w.runId, continued: w.status.name === 'CONTINUED_AS_NEW' });
    }
    return found.length === result.runs ? found : undefined;
  }, 20_000, 500);
  let heartbeatsInHistory = 0;
  let longest = 0;
  for (const { runId, continued } of runs) {
    const history = await stack.runtime.client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events = history.events ?? [];
    // The last run is ending, not handing over: the stream's heartbeats land in it for as long as
    // its teardown takes (longer on a busy machine), so only the runs that continued are bounded.
    if (continued) longest = Math.max(longest, events.length);
    heartbeatsInHistory += events.filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'heartbeat').length;
  }
  // Bounded: each run hands over within the burst in which the suggestion came (a burst adds at most
  // its signals and three events per workflow task), nowhere near the workflow's 20 000-event ceiling.
  expect(longest).toBeLessThan(SUGGESTED_AT + 4 * BURST);
  // Each heartbeat the server accepted is in exactly one run's history: none lost at a hand-over.
  expect(heartbeatsInHistory).toBe(accepted);
  console.info(`continue-as-new: ${result.runs} runs, longest history ${longest} events, ${accepted} heartbeats accepted, ${refusedAfterClose} refused after the end`);
}, 120_000);
