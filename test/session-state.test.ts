// The session's state machine (workflows/session-state.ts) on its own: every transition, every
// deadline and what a continue-as-new carries over. Pure logic with the clock passed in, so no
// Temporal server is involved here; the same machine under the real server and Docker engine is in
// session-lifecycle, exec-sessions and durability-continue-as-new, and test/replay.test.ts checks
// that the workflow wired to it issues the recorded commands.
import { ActivityFailure, ApplicationFailure, RetryState, TimeoutFailure } from '@temporalio/common';
import { describe, expect, it, vi } from 'vitest';
import type { CarriedState, SessionWorkflowInput } from '../shapes/session-workflow.js';
import { OUTAGE_GRACE_MAX_EXTRA_MS, SessionMachine, lateAfterMs } from '../workflows/session-state.js';

const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const S = 1000;
const iso = (ms: number) => new Date(ms).toISOString();

function sessionInput(over: Partial<SessionWorkflowInput> = {}): SessionWorkflowInput {
  return {
    operationId: 42,
    app: { id: 7, handle: 'shop' },
    account: { id: 3, handle: 'acme' },
    user: { id: 9, name: 'Ada', email: 'ada@example.com' },
    stack: 'local',
    command: null,
    containerSizeMb: 512,
    instanceId: 'essh-test',
    createdAt: iso(T0),
    expiresAt: iso(T0 + 3600 * S),
    heartbeatTimeoutS: 30,
    connectTimeoutS: 120,
    stopGraceS: 5,
    pidsLimit: 256,
    ...over,
  };
}

/** A machine whose container became ready at `readyAt` and was recorded `waiting_for_client`. */
function waiting(readyAt = T0 + 2 * S, over: Partial<SessionWorkflowInput> = {}) {
  const m = new SessionMachine(sessionInput(over));
  m.enter('provisioning');
  m.provisioned('c0ffee', readyAt);
  m.enter('waiting_for_client');
  m.readyForClients(readyAt);
  return m;
}

/** A machine with client `c1` attached at `at` and that state recorded. */
function active(at = T0 + 5 * S, over: Partial<SessionWorkflowInput> = {}) {
  const m = waiting(T0 + 2 * S, over);
  m.heartbeat('c1', at);
  expect(m.takeUnpublished()).toBe('active');
  return m;
}

describe('starting', () => {
  it('a new session starts provisioning, run 1, with nothing decided', () => {
    const m = new SessionMachine(sessionInput());
    expect(m.state).toBe('provisioning');
    expect(m.ending).toBeNull();
    expect(m.hasNews).toBe(false);
    expect(m.carryOver()).toEqual({ state: 'provisioning', containerId: null, readyAt: null, connectedAt: null, connections: {}, runs: 2 });
  });

  it('a continued run starts from the state its predecessor carried', () => {
    const carried: CarriedState = {
      state: 'active', containerId: 'c0ffee', readyAt: iso(T0), connectedAt: iso(T0 + S), connections: { c1: T0 + 9 * S }, runs: 3, heartbeatGraceFrom: T0 + 4 * S,
    };
    const m = new SessionMachine(sessionInput({ carried }));
    expect(m.state).toBe('active');
    expect(m.containerId).toBe('c0ffee');
    expect(m.nextDeadline().at).toBe(T0 + 9 * S + 30 * S);
    expect(m.carryOver()).toEqual({ ...carried, runs: 4 });
  });
});

describe('provisioning results', () => {
  it('the container ready: waiting for a client from then on', () => {
    const m = waiting(T0 + 2 * S);
    expect(m.state).toBe('waiting_for_client');
    expect(m.containerId).toBe('c0ffee');
    expect(m.hasNews).toBe(false);
    expect(m.carryOver().readyAt).toBe(iso(T0 + 2 * S));
  });

  it('a heartbeat while provisioning is kept, and makes the session active once the container is recorded ready', () => {
    const m = new SessionMachine(sessionInput({ startOnAttach: true }));
    m.heartbeat('c1', T0 + S);
    expect(m.state).toBe('provisioning');
    expect(m.hasNews).toBe(false);
    m.provisioned('c0ffee', T0 + 2 * S);
    m.enter('waiting_for_client');
    m.readyForClients(T0 + 3 * S);
    expect(m.state).toBe('active');
    expect(m.takeUnpublished()).toBe('active');
    expect(m.takeUnpublished()).toBeNull();
    expect(m.snapshot('w').connected_at).toBe(iso(T0 + 3 * S));
  });

  it('a session ended while provisioning stays ending-bound when the container comes', () => {
    const m = new SessionMachine(sessionInput());
    m.heartbeat('c1', T0 + S);
    m.terminate('stop', 'ops');
    m.provisioned('c0ffee', T0 + 2 * S);
    m.enter('waiting_for_client');
    m.readyForClients(T0 + 2 * S);
    expect(m.state).toBe('waiting_for_client');
    expect(m.ending?.reason).toBe('terminated');
  });

  it("a failed provisioning ends provision_failed with the activity's own error message", () => {
    const m = new SessionMachine(sessionInput());
    const cause = ApplicationFailure.create({ message: 'image essh/nope:1 not found', type: 'ProvisionError', nonRetryable: true });
    m.provisionFailed(new ActivityFailure('Activity task failed', 'provisionContainer', '1', RetryState.NON_RETRYABLE_FAILURE, 'host', cause));
    expect(m.ending).toEqual({ reason: 'provision_failed', message: 'image essh/nope:1 not found', by: null, exitCode: null });
    expect(m.hostNeverAnswered).toBe(false);
  });

  it('no host worker took the container: provision_failed naming the stack, and nothing on a host to tear down', () => {
    const m = new SessionMachine(sessionInput({ stack: 'nohost' }));
    const timeout = new TimeoutFailure('activity ScheduleToStart timeout', undefined, 'SCHEDULE_TO_START');
    m.provisionFailed(new ActivityFailure('Activity task timed out', 'provisionContainer', '1', RetryState.TIMEOUT, undefined, timeout));
    expect(m.hostNeverAnswered).toBe(true);
    expect(m.ending?.message).toBe(
      'no host worker picked up the container for stack nohost (task queue essh-host-nohost); start one with ESSH_HOST_STACKS=nohost',
    );
  });
});

describe('clients', () => {
  it('the first heartbeat while waiting makes the session active, to be recorded once', () => {
    const m = waiting();
    m.heartbeat('c1', T0 + 5 * S);
    expect(m.state).toBe('active');
    expect(m.hasNews).toBe(true);
    expect(m.takeUnpublished()).toBe('active');
    expect(m.hasNews).toBe(false);
    m.heartbeat('c1', T0 + 6 * S);
    expect(m.hasNews).toBe(false);
    expect(m.snapshot('w')).toMatchObject({ state: 'active', connected_at: iso(T0 + 5 * S), connections: ['c1'] });
  });

  it('the last client to disconnect ends an active session (disconnect, with its reason)', () => {
    const m = active();
    m.heartbeat('c2', T0 + 6 * S);
    m.clientDisconnected('c1');
    expect(m.ending).toBeNull();
    m.clientDisconnected('c2', 'the SSH connection closed');
    expect(m.ending).toEqual({ reason: 'disconnect', message: 'the SSH connection closed', by: null, exitCode: null });
    expect(m.hasNews).toBe(true);
  });

  it('a disconnect without a reason says the client disconnected', () => {
    const m = active();
    m.clientDisconnected('c1');
    expect(m.ending?.message).toBe('the client disconnected');
  });

  it('a disconnect before the session is active does not end it', () => {
    const m = waiting();
    m.clientDisconnected('c1');
    expect(m.ending).toBeNull();
  });
});

describe('endings by signal', () => {
  it('terminate: its reason and who, or plain "terminated"', () => {
    const m = active();
    m.terminate('maintenance', 'ops@example.com');
    expect(m.ending).toEqual({ reason: 'terminated', message: 'maintenance', by: 'ops@example.com', exitCode: null });
    const plain = waiting();
    plain.terminate();
    expect(plain.ending).toEqual({ reason: 'terminated', message: 'terminated', by: null, exitCode: null });
  });

  it("the container's exit: exit with its code and message", () => {
    const m = waiting();
    m.containerExited({ container_id: 'c0ffee', exit_code: 0, lost: false, message: 'the container stopped' });
    expect(m.ending).toEqual({ reason: 'exit', message: 'the container stopped', by: null, exitCode: 0 });
  });

  it('the container killed for memory says so', () => {
    const m = waiting();
    m.containerExited({ container_id: 'c0ffee', exit_code: 137, lost: false, oom_killed: true, message: 'ignored' });
    expect(m.ending).toEqual({ reason: 'exit', message: 'the container ran out of memory and was killed', by: null, exitCode: 137 });
  });

  it('the container gone outside essh: container_lost', () => {
    const m = waiting();
    m.containerExited({ container_id: 'c0ffee', exit_code: null, lost: true });
    expect(m.ending).toEqual({ reason: 'container_lost', message: 'the container vanished outside essh', by: null, exitCode: null });
  });

  it("another container's exit is ignored; one without an id, or before the session has one, is this session's", () => {
    const m = waiting();
    m.containerExited({ container_id: 'other', exit_code: 1, lost: false });
    expect(m.ending).toBeNull();
    m.containerExited({ container_id: '', exit_code: 2, lost: false });
    expect(m.ending?.exitCode).toBe(2);
    const early = new SessionMachine(sessionInput());
    early.containerExited({ container_id: 'anything', exit_code: 3, lost: false });
    expect(early.ending?.exitCode).toBe(3);
  });

  it("the program's exit: exit with its code; killed for memory names the container's size", () => {
    const m = active();
    m.programExited({ exit_code: 5 });
    expect(m.ending).toEqual({ reason: 'exit', message: null, by: null, exitCode: 5 });
    const oom = active(T0 + 5 * S, { containerSizeMb: 128 });
    oom.programExited({ exit_code: 137, oom_killed: true });
    expect(oom.ending?.message).toBe("the program ran out of the container's 128 MB of memory and was killed");
  });

  it('a cancelled workflow ends terminated by temporal', () => {
    const m = active();
    m.cancelled();
    expect(m.ending).toEqual({ reason: 'terminated', message: 'the workflow was cancelled', by: 'temporal', exitCode: null });
  });

  it('the first ending wins; signals after it change nothing', () => {
    const m = active();
    m.programExited({ exit_code: 3 });
    m.terminate('late', 'ops');
    m.cancelled();
    m.clientDisconnected('c1');
    m.heartbeat('c2', T0 + 9 * S);
    expect(m.ending).toEqual({ reason: 'exit', message: null, by: null, exitCode: 3 });
    expect(m.snapshot('w').connections).toEqual([]);
  });

  it('its host lost: container_lost naming the host and its last report, once; nothing more is asked of that host', () => {
    const m = active();
    expect(m.hostLost({ hostId: 'h2', lastSeenAt: '2026-12-07T05:40:12.000Z' })).toBe(true);
    expect(m.lostHost).toBe('h2');
    expect(m.ending).toEqual({
      reason: 'container_lost', by: null, exitCode: null,
      message: 'host h2 stopped reporting at 2026-12-07T05:40:12.000Z; its container could not be removed and will be when the host returns',
    });
    expect(m.hasNews).toBe(true);
    expect(m.hostLost({ hostId: 'h3', lastSeenAt: '2026-12-07T05:41:00.000Z' })).toBe(false);
    m.terminate('late', 'ops');
    expect(m.ending?.message).toMatch(/^host h2 /);
  });

  it('its host lost while an ending waits for the teardown there: container_lost, keeping the earlier ending in the message', () => {
    const m = active();
    m.programExited({ exit_code: 3 });
    m.enter('ending');
    expect(m.hostLost({ hostId: 'h2', lastSeenAt: '2026-12-07T05:40:12.000Z' })).toBe(true);
    expect(m.ending).toEqual({
      reason: 'container_lost', by: null, exitCode: 3,
      message: 'host h2 stopped reporting at 2026-12-07T05:40:12.000Z; the session was ending (exit); its container could not be removed and will be when the host returns',
    });
  });

  it('its host lost after the teardown: nothing changes', () => {
    const m = active();
    m.terminate('bye', 'ops');
    m.enter('ending');
    m.tornDown(T0 + 9 * S);
    expect(m.hostLost({ hostId: 'h2', lastSeenAt: '2026-12-07T05:40:12.000Z' })).toBe(false);
    expect(m.ending).toEqual({ reason: 'terminated', message: 'bye', by: 'ops', exitCode: null });
    expect(m.lostHost).toBeNull();
  });

  it('nothing ends a session already ending or ended (a carried one included)', () => {
    for (const state of ['ending', 'ended'] as const) {
      const m = new SessionMachine(sessionInput({ carried: { state, containerId: null, readyAt: null, connectedAt: null, connections: {}, runs: 1 } }));
      m.terminate();
      m.heartbeat('c1', T0);
      expect(m.ending).toBeNull();
      expect(m.snapshot('w').connections).toEqual([]);
    }
  });
});

describe('deadlines', () => {
  it('provisioning: only the maximum duration', () => {
    const d = new SessionMachine(sessionInput()).nextDeadline();
    expect(d.at).toBe(T0 + 3600 * S);
    expect(d.ending).toEqual({ reason: 'expired', message: 'the maximum session duration passed', by: null, exitCode: null });
    expect(d.summary).toBe(`Maximum session duration: the session expires at ${iso(T0 + 3600 * S)}`);
  });

  it('waiting: the connect timeout from the moment the container was ready', () => {
    const d = waiting(T0 + 2 * S).nextDeadline();
    expect(d.at).toBe(T0 + 2 * S + 120 * S);
    expect(d.ending).toEqual({ reason: 'connect_timeout', message: 'no client attached within 120 s', by: null, exitCode: null });
    expect(d.summary).toBe('Connect timeout: no client within 120 s of the container being ready');
  });

  it('waiting, with the maximum duration first: expiry', () => {
    expect(waiting(T0 + 2 * S, { expiresAt: iso(T0 + 60 * S) }).nextDeadline()).toMatchObject({ at: T0 + 60 * S, ending: { reason: 'expired' } });
  });

  it('active: the heartbeat timeout from the latest heartbeat of any client', () => {
    const m = active(T0 + 5 * S);
    let d = m.nextDeadline();
    expect(d.at).toBe(T0 + 5 * S + 30 * S);
    expect(d.ending).toEqual({ reason: 'disconnect', message: 'no heartbeat for 30 s', by: null, exitCode: null });
    expect(d.summary).toBe('Heartbeat timeout: no heartbeat from the client for 30 s');
    m.heartbeat('c2', T0 + 20 * S);
    m.heartbeat('c1', T0 + 12 * S);
    d = m.nextDeadline();
    expect(d.at).toBe(T0 + 50 * S);
  });

  it('active with no heartbeat on record (every client gone but the state): from when it became active', () => {
    const carried: CarriedState = { state: 'active', containerId: 'c', readyAt: iso(T0), connectedAt: iso(T0 + 7 * S), connections: {}, runs: 1 };
    expect(new SessionMachine(sessionInput({ carried })).nextDeadline().at).toBe(T0 + 37 * S);
    const noConnectedAt = new SessionMachine(sessionInput({ carried: { ...carried, connectedAt: null } }));
    expect(noConnectedAt.nextDeadline().at).toBe(T0 + 30 * S);
  });

  it('active, with the maximum duration first: expiry', () => {
    expect(active(T0 + 5 * S, { expiresAt: iso(T0 + 20 * S) }).nextDeadline()).toMatchObject({ at: T0 + 20 * S, ending: { reason: 'expired' } });
  });

  it('a passed deadline ends the session with its ending, without asking about the grace', () => {
    for (const m of [waiting(), new SessionMachine(sessionInput())]) {
      const d = m.nextDeadline();
      const grace = vi.fn(() => true);
      expect(m.deadlinePassed(d, d.at + 10 * 60 * S, grace)).toBe(false);
      expect(grace).not.toHaveBeenCalled();
      expect(m.ending).toEqual(d.ending);
    }
  });

  it('a heartbeat deadline seen on time ends the session (disconnect), without asking about the grace', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    const grace = vi.fn(() => true);
    expect(m.deadlinePassed(d, d.at + lateAfterMs(30), grace)).toBe(false);
    expect(grace).not.toHaveBeenCalled();
    expect(m.ending?.reason).toBe('disconnect');
  });

  it('a heartbeat deadline seen late (an outage): one more heartbeat timeout, once per silence', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    const seenAt = d.at + lateAfterMs(30) + 1;
    const grace = vi.fn(() => true);
    expect(m.deadlinePassed(d, seenAt, grace)).toBe(true);
    expect(grace).toHaveBeenCalledTimes(1);
    expect(m.ending).toBeNull();
    expect(m.carryOver().heartbeatGraceFrom).toBe(seenAt);
    const after = m.nextDeadline();
    expect(after.at).toBe(seenAt + 30 * S);
    // Still silent when that one is seen late too: the client is gone.
    expect(m.deadlinePassed(after, after.at + 60 * S, grace)).toBe(false);
    expect(grace).toHaveBeenCalledTimes(1);
    expect(m.ending?.reason).toBe('disconnect');
  });

  it('with the later marker, the grace lasts a heartbeat timeout plus how late the deadline was seen, capped', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    const lateBy = 12 * S;
    expect(m.deadlinePassed(d, d.at + lateBy, () => true, () => true)).toBe(true);
    expect(m.carryOver()).toMatchObject({ heartbeatGraceFrom: d.at + lateBy, heartbeatGraceMs: 30 * S + lateBy });
    const after = m.nextDeadline();
    expect(after.at).toBe(d.at + lateBy + 30 * S + lateBy);
    // A heartbeat within the grace moves the deadline only when it is later than the grace's end.
    m.heartbeat('c1', d.at + lateBy + S);
    expect(m.nextDeadline().at).toBe(after.at);
    m.heartbeat('c1', d.at + 2 * lateBy + 10 * S);
    expect(m.nextDeadline().at).toBe(d.at + 2 * lateBy + 40 * S);
    // A very long outage adds at most OUTAGE_GRACE_MAX_EXTRA_MS.
    const long = active(T0 + 5 * S);
    const dl = long.nextDeadline();
    long.deadlinePassed(dl, dl.at + 900 * S, () => true, () => true);
    expect(long.nextDeadline().at).toBe(dl.at + 900 * S + 30 * S + OUTAGE_GRACE_MAX_EXTRA_MS);
  });

  it('without the later marker (histories from before it), the grace is one heartbeat timeout', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    const scales = vi.fn(() => false);
    expect(m.deadlinePassed(d, d.at + 12 * S, () => true, scales)).toBe(true);
    expect(scales).toHaveBeenCalledTimes(1);
    expect(m.carryOver().heartbeatGraceMs).toBeUndefined();
    expect(m.nextDeadline().at).toBe(d.at + 12 * S + 30 * S);
  });

  it('a heartbeat that arrives after the deadline passed unseen (an outage) gives the same grace, with the later marker', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    const lateBy = 10 * S;
    const marker = vi.fn(() => true);
    m.heartbeat('c1', d.at + lateBy, marker);
    expect(marker).toHaveBeenCalledTimes(1);
    expect(m.carryOver()).toMatchObject({ heartbeatGraceFrom: d.at + lateBy, heartbeatGraceMs: 30 * S + lateBy });
    // Not one heartbeat timeout from that beat, but the grace's end.
    expect(m.nextDeadline().at).toBe(d.at + lateBy + 30 * S + lateBy);
    // The overdue timer of the same task then finds its deadline moved, and the session goes on.
    expect(m.ending).toBeNull();
    // A heartbeat on time asks nothing.
    const onTime = vi.fn(() => true);
    m.heartbeat('c1', d.at + lateBy + 2 * S, onTime);
    expect(onTime).not.toHaveBeenCalled();
  });

  it('without that marker (histories from before it), a late heartbeat only moves the deadline', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    m.heartbeat('c1', d.at + 10 * S, () => false);
    expect(m.carryOver().heartbeatGraceMs).toBeUndefined();
    expect(m.nextDeadline().at).toBe(d.at + 10 * S + 30 * S);
  });

  it('after a grace, a new heartbeat earns another one', () => {
    const m = active(T0 + 5 * S);
    const first = m.nextDeadline();
    const seenAt = first.at + 60 * S;
    expect(m.deadlinePassed(first, seenAt, () => true)).toBe(true);
    m.heartbeat('c1', seenAt + S);
    const next = m.nextDeadline();
    expect(next.at).toBe(seenAt + S + 30 * S);
    expect(m.deadlinePassed(next, next.at + 60 * S, () => true)).toBe(true);
  });

  it('a history recorded before the grace existed (no patch marker) ends at once', () => {
    const m = active(T0 + 5 * S);
    const d = m.nextDeadline();
    expect(m.deadlinePassed(d, d.at + 60 * S, () => false)).toBe(false);
    expect(m.ending?.reason).toBe('disconnect');
    expect(m.carryOver().heartbeatGraceFrom).toBeUndefined();
  });

  it('late means a sixth of the heartbeat timeout, at least a second', () => {
    expect(lateAfterMs(30)).toBe(5 * S);
    expect(lateAfterMs(4)).toBe(S);
  });
});

describe('continue-as-new', () => {
  it('carries state, container, times, connections and the grace to the next run, one run further', () => {
    const m = active(T0 + 5 * S);
    m.heartbeat('c2', T0 + 8 * S);
    const d = m.nextDeadline();
    m.deadlinePassed(d, d.at + 60 * S, () => true);
    const carried = m.carryOver();
    expect(carried).toEqual({
      state: 'active', containerId: 'c0ffee', readyAt: iso(T0 + 2 * S), connectedAt: iso(T0 + 5 * S),
      connections: { c1: T0 + 5 * S, c2: T0 + 8 * S }, runs: 2, heartbeatGraceFrom: d.at + 60 * S,
    });
    const next = new SessionMachine(sessionInput({ carried: JSON.parse(JSON.stringify(carried)) }));
    expect(next.nextDeadline()).toEqual(m.nextDeadline());
    expect(next.snapshot('w')).toEqual(m.snapshot('w'));
    expect(next.hasNews).toBe(false);
  });

  it('a waiting session keeps its connect deadline across runs', () => {
    const m = waiting(T0 + 2 * S);
    expect(new SessionMachine(sessionInput({ carried: m.carryOver() })).nextDeadline()).toEqual(m.nextDeadline());
  });
});

describe('the ending and what is recorded', () => {
  it('the record and the describe answer follow the state and the ending; the end time once torn down', () => {
    const m = active(T0 + 5 * S);
    m.programExited({ exit_code: 7 });
    m.enter('ending');
    expect(m.record()).toEqual({
      operationId: 42, state: 'ending', containerId: 'c0ffee', connectedAt: iso(T0 + 5 * S), endedAt: null,
      endReason: 'exit', endMessage: null, endedBy: null, exitCode: 7,
    });
    expect(m.tornDown(T0 + 60 * S)).toBe(iso(T0 + 60 * S));
    m.enter('ended');
    expect(m.record()).toMatchObject({ state: 'ended', endedAt: iso(T0 + 60 * S) });
    expect(m.snapshot('ssh-session-42')).toEqual({
      id: 42, operation_id: 42, workflow_id: 'ssh-session-42', app: 'shop', account: 'acme', stack: 'local',
      user: { id: 9, name: 'Ada', email: 'ada@example.com' }, state: 'ended', end_reason: 'exit', end_message: null,
      ended_by: null, exit_code: 7, command: null, detached: false, container_size_mb: 512, container_id: 'c0ffee', created_at: iso(T0),
      connected_at: iso(T0 + 5 * S), ended_at: iso(T0 + 60 * S), expires_at: iso(T0 + 3600 * S), connections: ['c1'],
    });
    expect(m.result()).toEqual({ end_reason: 'exit', exit_code: 7, end_message: null, ended_by: null, runs: 1 });
  });

  it("the Temporal UI's details show state, container, clients and the end, not the user", () => {
    const m = active(T0 + 5 * S);
    expect(m.details()).toContain('**State** active · **Container** c0ffee · **Clients attached** 1');
    m.programExited({ exit_code: 1 });
    expect(m.details()).toContain('**End reason** exit · **Exit code** 1');
    expect(m.details()).not.toContain('ada@example.com');
  });

  it('no result without an ending', () => {
    expect(() => new SessionMachine(sessionInput()).result()).toThrow('session loop left without an end reason');
  });
});

describe('detached jobs', () => {
  const job = { command: ['sh', '-c', './migrate'], detach: true };
  /** A detached job whose container became ready at T0+2 s and was recorded `active` (its program started). */
  function running(over: Partial<SessionWorkflowInput> = {}) {
    const m = new SessionMachine(sessionInput({ ...job, ...over }), { detached: true });
    m.enter('provisioning');
    m.provisioned('c0ffee', T0 + 2 * S);
    m.enter('active');
    return m;
  }

  it('only the workflow says a session is detached (its patch taken): the input alone does not', () => {
    expect(new SessionMachine(sessionInput(job)).detached).toBe(false);
    expect(running().detached).toBe(true);
    expect(running().snapshot('ssh-session-42')).toMatchObject({ detached: true, command: job.command, connected_at: null });
    expect(active().snapshot('ssh-session-42').detached).toBe(false);
  });

  it('has no heartbeat deadline: while it runs, only the maximum duration ends it', () => {
    const m = running();
    expect(m.nextDeadline()).toMatchObject({ at: T0 + 3600 * S, ending: { reason: 'expired' } });
    // Long past any heartbeat timeout, the deadline is still the expiry.
    expect(m.deadlinePassed(m.nextDeadline(), T0 + 3600 * S, () => true)).toBe(false);
    expect(m.ending).toMatchObject({ reason: 'expired' });
  });

  it('heartbeats and disconnects neither attach a client nor end it', () => {
    const m = running();
    m.heartbeat('c1', T0 + 10 * S);
    expect(m.takeUnpublished()).toBeNull();
    expect(m.snapshot('w').connections).toEqual([]);
    m.clientDisconnected('c1', 'gone');
    m.clientDisconnected('c2');
    expect(m.ending).toBeNull();
    expect(m.nextDeadline().ending.reason).toBe('expired');
  });

  it("the program's exit ends it with its exit code, as an attached program's does", () => {
    const m = running();
    m.programExited({ exit_code: 7 });
    expect(m.ending).toEqual({ reason: 'exit', message: null, by: null, exitCode: 7 });
  });

  it('a terminate ends it, and the exit that follows (its container removed) changes nothing', () => {
    const m = running();
    m.terminate('stop the migration', 'ops@example.com');
    m.programExited({ exit_code: null });
    expect(m.ending).toEqual({ reason: 'terminated', message: 'stop the migration', by: 'ops@example.com', exitCode: null });
  });

  it('a host that stops following the program ends it as container_lost, with the failure', () => {
    const m = running();
    m.detachedProgramLost(ApplicationFailure.create({ message: 'no such container' }));
    expect(m.ending).toMatchObject({ reason: 'container_lost', exitCode: null });
    expect(m.ending!.message).toMatch(/detached program could not be followed.*no such container/);
  });
});

describe('idle timeout', () => {
  const message = 'no input or output for 6 s (the idle timeout of account acme)';

  it("the attached client's portal ends it idle, with the portal's message, and nothing later changes that", () => {
    const m = active();
    expect(m.idle({ connection_id: 'c1', message })).toBe(true);
    expect(m.ending).toEqual({ reason: 'idle', message, by: null, exitCode: null });
    expect(m.hasNews).toBe(true);
    m.programExited({ exit_code: 0 });
    m.clientDisconnected('c1', 'closed');
    expect(m.ending).toMatchObject({ reason: 'idle', message });
    expect(m.result()).toMatchObject({ end_reason: 'idle', end_message: message, exit_code: null });
    expect(m.record()).toMatchObject({ endReason: 'idle', endMessage: message });
  });

  it('a connection the workflow does not know (replaced by a reattach, or gone) ends nothing', () => {
    const m = active();
    expect(m.idle({ connection_id: 'c-old', message })).toBe(false);
    m.heartbeat('c2', T0 + 6 * S);
    m.clientDisconnected('c1', 'its portal stopped; the client reattached');
    expect(m.idle({ connection_id: 'c1', message })).toBe(false);
    expect(m.ending).toBeNull();
    expect(m.idle({ connection_id: 'c2', message })).toBe(true);
  });

  it('a session no client has attached to yet, or one already ending, is not ended idle', () => {
    const w = waiting();
    expect(w.idle({ connection_id: 'c1', message })).toBe(false);
    expect(w.ending).toBeNull();
    const t = active();
    t.terminate('done', 'ops@example.com');
    expect(t.idle({ connection_id: 'c1', message })).toBe(false);
    expect(t.ending).toMatchObject({ reason: 'terminated' });
  });

  it('a detached job has no client: never ended idle', () => {
    const m = new SessionMachine(sessionInput({ command: ['sh', '-c', './migrate'], detach: true }), { detached: true });
    m.enter('provisioning');
    m.provisioned('c0ffee', T0 + 2 * S);
    m.enter('active');
    m.heartbeat('c1', T0 + 3 * S);
    expect(m.idle({ connection_id: 'c1', message })).toBe(false);
    expect(m.ending).toBeNull();
  });
});
