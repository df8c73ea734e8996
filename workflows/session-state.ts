// The session's state machine: what `sessionWorkflow` carries, how each signal and each activity's
// outcome moves it, when it must end unless something happens first, and how it ended. Pure: no
// Temporal API is called here (the clock comes in as `now`), so it is tested without a server
// (test/session-state.test.ts); workflows/session.ts wires signals, the query, the timer and the
// activities to it. Deterministic: safe in workflow code.
import { ActivityFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/common';
import {
  hostOwnTaskQueue,
  hostTaskQueue,
  type CarriedState,
  type ContainerExitedSignal,
  type HostLostSignal,
  type IdleTimeoutSignal,
  type ProgramExitedSignal,
  type SessionRecordUpdate,
  type SessionResult,
  type SessionSnapshot,
  type SessionWorkflowInput,
} from '../shapes/session-workflow.js';
import type { EndReason, SessionState } from '../shapes/enumerations.js';
import { sessionCurrentDetails } from './ui-metadata.js';

export interface Ending {
  reason: EndReason;
  message: string | null;
  by: string | null;
  exitCode: number | null;
}

/** The earliest moment something ends the session unless a signal comes first, and what the timer is for. */
export interface Deadline {
  at: number;
  ending: Ending;
  /** What the Temporal UI shows on the wait loop's timer. */
  summary: string;
}

/**
 * A heartbeat deadline whose timer the workflow sees this late (a fraction of the heartbeat timeout, at
 * least a second) passed while no workflow task could run on it: the Temporal server, or the way to it,
 * was down, so the portal's heartbeats could not arrive either (heartbeats that did arrive come in the
 * same task as the overdue timer, and are seen first).
 */
export const lateAfterMs = (heartbeatTimeoutS: number) => Math.max(1000, (heartbeatTimeoutS * 1000) / 6);

/**
 * The most an outage adds to the grace after it. The grace is one heartbeat timeout plus how late the
 * deadline was seen (about how long the outage lasted): clients back off exponentially while the server
 * is away, so the longer it was away, the longer the portal's first heartbeat can take to get through
 * after it is back (seen in CI: 10 sessions ended when that took more than the 8 s of a timeout).
 */
export const OUTAGE_GRACE_MAX_EXTRA_MS = 5 * 60 * 1000;

const iso = (ms: number) => new Date(ms).toISOString();
const ending = (reason: EndReason, message: string | null, exitCode: number | null = null, by: string | null = null): Ending =>
  ({ reason, message, by, exitCode });

export class SessionMachine {
  private readonly s: CarriedState;
  private end: Ending | null = null;
  private endedAt: string | null = null;
  private unpublished = false;
  /** Provisioning failed because no host worker ever took it: nothing on a host to tear down. */
  hostNeverAnswered = false;
  /** The host the session's container is on stopped reporting (a `hostLost` signal): nothing more is asked of it. */
  lostHost: string | null = null;
  /**
   * A detached job (the workflow's input asked for one, and its code took the `detached-jobs` patch): the
   * host runs its program with no client, so heartbeats and disconnects mean nothing to it, and only the
   * program's exit, a terminate or the maximum duration end it.
   */
  readonly detached: boolean;

  constructor(private readonly input: SessionWorkflowInput, opts: { detached?: boolean } = {}) {
    this.detached = opts.detached === true;
    this.s = input.carried ?? { state: 'provisioning', containerId: null, readyAt: null, connectedAt: null, connections: {}, runs: 1 };
  }

  get state(): SessionState {
    return this.s.state;
  }
  get containerId(): string | null {
    return this.s.containerId;
  }
  /** How the session ends, once something has decided it. */
  get ending(): Ending | null {
    return this.end;
  }
  /** Something the wait loop must act on: an ending, or a state not yet recorded. */
  get hasNews(): boolean {
    return this.end !== null || this.unpublished;
  }

  private closing(): boolean {
    return this.end !== null || this.s.state === 'ending' || this.s.state === 'ended';
  }
  /** The first ending decided wins; once the session is ending, nothing changes it. */
  private endWith(e: Ending): void {
    if (!this.closing()) this.end = e;
  }
  private attach(now: number): void {
    this.s.state = 'active';
    this.s.connectedAt = iso(now);
    this.unpublished = true;
  }

  /**
   * A heartbeat from `connectionId` at `now`. One that arrives after the heartbeat deadline passed
   * unseen (the workflow could not run meanwhile: an outage; the overdue timer comes in the same task,
   * after it) gives the same grace as a deadline seen late, if `graceOnLateBeat()` (the workflow's
   * `patched()` marker, asked only then): the portal's other heartbeats come back from the outage on
   * its client's backoff, and this one, sent before or during it, says nothing of when they will.
   */
  heartbeat(connectionId: string, now: number, graceOnLateBeat: () => boolean = () => false): void {
    if (this.closing() || this.detached) return;
    if (this.s.state === 'active') {
      const deadline = this.nextDeadline();
      const lateMs = now - deadline.at;
      if (deadline.ending.reason === 'disconnect' && lateMs > lateAfterMs(this.input.heartbeatTimeoutS) && graceOnLateBeat()) {
        this.s.heartbeatGraceFrom = now;
        this.s.heartbeatGraceMs = this.input.heartbeatTimeoutS * 1000 + Math.min(lateMs, OUTAGE_GRACE_MAX_EXTRA_MS);
      }
    }
    this.s.connections[connectionId] = now;
    if (this.s.state === 'waiting_for_client') this.attach(now);
  }

  clientDisconnected(connectionId: string, reason?: string): void {
    if (this.detached) return;
    delete this.s.connections[connectionId];
    if (this.s.state === 'active' && Object.keys(this.s.connections).length === 0) {
      this.endWith(ending('disconnect', reason ?? 'the client disconnected'));
    }
  }

  terminate(reason?: string, by?: string): void {
    this.endWith(ending('terminated', reason ?? 'terminated', null, by ?? null));
  }

  /**
   * The portal saw neither input nor output for the session's idle timeout. Only an attached client's
   * portal counts: a detached job has no client, and a connection the workflow no longer knows (one
   * replaced by a reattach, or gone) speaks for no one. Returns whether the session now ends `idle`.
   */
  idle({ connection_id, message }: IdleTimeoutSignal): boolean {
    if (this.detached || this.closing() || this.s.state !== 'active' || !(connection_id in this.s.connections)) return false;
    this.endWith(ending('idle', message));
    return true;
  }

  /** The host agent saw a container of this session exit or vanish (a signal about another container is ignored). */
  containerExited({ container_id, exit_code, lost, oom_killed, message }: ContainerExitedSignal): void {
    if (this.s.containerId && container_id && container_id !== this.s.containerId) return;
    if (lost) {
      this.endWith(ending('container_lost', message ?? 'the container vanished outside essh', exit_code));
    } else {
      const oom = oom_killed ? 'the container ran out of memory and was killed' : null;
      this.endWith(ending('exit', oom ?? message ?? null, exit_code));
    }
  }

  /** The portal saw the session's program (its docker exec) exit: the session ends with its exit code. */
  programExited({ exit_code, oom_killed }: Pick<ProgramExitedSignal, 'exit_code' | 'oom_killed'>): void {
    const oom = oom_killed ? `the program ran out of the container's ${this.input.containerSizeMb} MB of memory and was killed` : null;
    this.endWith(ending('exit', oom, exit_code));
  }

  /**
   * The host stopped following a detached job's program (its process died, or the program could not be
   * started): whether it still runs is not known, so the session ends and its container goes.
   */
  detachedProgramLost(err: unknown): void {
    this.endWith(ending('container_lost', `the detached program could not be followed to its end: ${failureMessage(err, this.input)}`));
  }

  /**
   * The session's host stopped reporting: its container is out of reach, so the session ends
   * `container_lost` and its teardown is left to the host's reconciler, should it come back. It also
   * replaces an ending already decided whose teardown has not been done (it waits on that host): the
   * container was not removed, which the reason then says, keeping the earlier one in the message.
   * Returns whether it changed anything (a repeated signal, or one after the teardown, does not).
   */
  hostLost({ hostId, lastSeenAt }: HostLostSignal): boolean {
    if (this.lostHost !== null || this.endedAt !== null) return false;
    this.lostHost = hostId;
    const was = this.end;
    const earlier = was ? `; the session was ending (${was.reason}${was.message ? `: ${was.message}` : ''})` : '';
    this.end = ending(
      'container_lost',
      `host ${hostId} stopped reporting at ${lastSeenAt}${earlier}; its container could not be removed and will be when the host returns`,
      was?.exitCode ?? null, was?.by ?? null,
    );
    return true;
  }

  /** The Temporal workflow was cancelled. */
  cancelled(): void {
    this.endWith(ending('terminated', 'the workflow was cancelled', null, 'temporal'));
  }

  provisioned(containerId: string, now: number): void {
    this.s.containerId = containerId;
    this.s.readyAt = iso(now);
  }

  /**
   * The container is recorded as waiting for its client. A start-on-attach container is attached to as
   * soon as it exists: the client's first heartbeat may have come while it was provisioned (one during
   * that record's write already made the session active).
   */
  readyForClients(now: number): void {
    if (!this.end && this.s.state === 'waiting_for_client' && Object.keys(this.s.connections).length > 0) this.attach(now);
  }

  provisionFailed(err: unknown): void {
    this.hostNeverAnswered = isScheduleToStartTimeout(err);
    this.endWith(ending('provision_failed', failureMessage(err, this.input)));
  }

  /** The earliest moment something ends the session unless a signal comes first. */
  nextDeadline(): Deadline {
    const { input, s } = this;
    if (s.state === 'waiting_for_client' && s.readyAt) {
      const connectBy = Date.parse(s.readyAt) + input.connectTimeoutS * 1000;
      if (connectBy < this.expiresAtMs) {
        return {
          at: connectBy,
          ending: ending('connect_timeout', `no client attached within ${input.connectTimeoutS} s`),
          summary: `Connect timeout: no client within ${input.connectTimeoutS} s of the container being ready`,
        };
      }
    } else if (s.state === 'active' && !this.detached) {
      const timeoutMs = input.heartbeatTimeoutS * 1000;
      const lastBeat = Math.max(Date.parse(s.connectedAt ?? input.createdAt), ...Object.values(s.connections));
      const silentBy = Math.max(lastBeat + timeoutMs, (s.heartbeatGraceFrom ?? 0) + (s.heartbeatGraceMs ?? timeoutMs));
      if (silentBy < this.expiresAtMs) {
        return {
          at: silentBy,
          ending: ending('disconnect', `no heartbeat for ${input.heartbeatTimeoutS} s`),
          summary: `Heartbeat timeout: no heartbeat from the client for ${input.heartbeatTimeoutS} s`,
        };
      }
    }
    return {
      at: this.expiresAtMs,
      ending: ending('expired', 'the maximum session duration passed'),
      summary: `Maximum session duration: the session expires at ${input.expiresAt}`,
    };
  }

  private get expiresAtMs(): number {
    return Date.parse(this.input.expiresAt);
  }

  /**
   * `deadline` has passed at `now`: the session ends with its ending. Except a heartbeat deadline seen
   * late (a Temporal outage kept the workflow from running): the client gets one more heartbeat timeout
   * from now, once per silence, before it counts as gone, if `graceAllowed()` (the workflow's
   * `patched()` marker, asked only when it would apply); and, if `graceScales()` (a later marker, asked
   * only when the grace is given), as much again as the deadline was late, up to OUTAGE_GRACE_MAX_EXTRA_MS.
   * Returns whether the session goes on.
   */
  deadlinePassed(deadline: Deadline, now: number, graceAllowed: () => boolean, graceScales: () => boolean = () => false): boolean {
    const lastBeat = Math.max(0, ...Object.values(this.s.connections));
    const lateMs = now - deadline.at;
    if (
      deadline.ending.reason === 'disconnect' && lateMs > lateAfterMs(this.input.heartbeatTimeoutS) &&
      (this.s.heartbeatGraceFrom ?? 0) < lastBeat && graceAllowed()
    ) {
      this.s.heartbeatGraceFrom = now;
      if (graceScales()) this.s.heartbeatGraceMs = this.input.heartbeatTimeoutS * 1000 + Math.min(lateMs, OUTAGE_GRACE_MAX_EXTRA_MS);
      else delete this.s.heartbeatGraceMs;
      return true;
    }
    this.endWith(deadline.ending);
    return false;
  }

  /** The state to record next, if one changed by a signal is not recorded yet (the flag is cleared). */
  takeUnpublished(): SessionState | null {
    if (!this.unpublished) return null;
    this.unpublished = false;
    return this.s.state;
  }

  /** The session moves to `state` (the workflow then records it). */
  enter(state: SessionState): void {
    this.s.state = state;
  }

  /** The session's resources are gone: only the `ended` record is left to write. Returns its end time. */
  tornDown(now: number): string {
    return (this.endedAt = iso(now));
  }

  /** What the next run starts from when this one continues as new. */
  carryOver(): CarriedState {
    return { ...this.s, runs: this.s.runs + 1 };
  }

  /** The Operation record's fields the workflow writes. */
  record(): SessionRecordUpdate {
    const e = this.end;
    return {
      operationId: this.input.operationId,
      state: this.s.state,
      containerId: this.s.containerId,
      connectedAt: this.s.connectedAt,
      endedAt: this.endedAt,
      endReason: e?.reason ?? null,
      endMessage: e?.message ?? null,
      endedBy: e?.by ?? null,
      exitCode: e?.exitCode ?? null,
    };
  }

  /** The `describe` query's answer. */
  snapshot(workflowId: string): SessionSnapshot {
    const { input, s, end: e } = this;
    return {
      id: input.operationId,
      operation_id: input.operationId,
      workflow_id: workflowId,
      app: input.app.handle,
      account: input.account.handle,
      stack: input.stack,
      user: input.user,
      state: s.state,
      end_reason: e?.reason ?? null,
      end_message: e?.message ?? null,
      ended_by: e?.by ?? null,
      exit_code: e?.exitCode ?? null,
      command: input.command,
      detached: input.detach === true,
      container_size_mb: input.containerSizeMb,
      container_id: s.containerId,
      created_at: input.createdAt,
      connected_at: s.connectedAt,
      ended_at: this.endedAt,
      expires_at: input.expiresAt,
      connections: Object.keys(s.connections),
    };
  }

  /** What the Temporal UI shows as the session's current details: ids, handles, state and end, never personal data. */
  details(): string {
    const { s, end: e } = this;
    return sessionCurrentDetails(this.input, {
      state: s.state, containerId: s.containerId, clients: Object.keys(s.connections).length, runs: s.runs,
      end: e ? { reason: e.reason, exitCode: e.exitCode, message: e.message } : null,
    });
  }

  result(): SessionResult {
    const e = this.end;
    if (!e) throw ApplicationFailure.nonRetryable('session loop left without an end reason');
    return { end_reason: e.reason, exit_code: e.exitCode, end_message: e.message, ended_by: e.by, runs: this.s.runs };
  }
}

export function isScheduleToStartTimeout(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

export function failureMessage(err: unknown, input: Pick<SessionWorkflowInput, 'stack' | 'hostId'>): string {
  const { stack, hostId } = input;
  if (isScheduleToStartTimeout(err) && hostId) {
    return `host ${hostId}, which this session was placed on, did not pick up its container (task queue ${hostOwnTaskQueue(stack, hostId)}): ` +
      `it has stopped or lost its connection to Temporal; start a new session (another host of stack ${stack} takes it), and see to that host`;
  }
  if (isScheduleToStartTimeout(err)) {
    return `no host worker picked up the container for stack ${stack} (task queue ${hostTaskQueue(stack)}); start one with ESSH_HOST_STACKS=${stack}`;
  }
  let cur: any = err;
  // Activity failures wrap the activity's own error as their cause; its message is the useful one.
  while (cur?.cause) cur = cur.cause;
  return String(cur?.message ?? err);
}
