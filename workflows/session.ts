import {
  type ActivityOptions,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { DbActivities } from '../activities/db.js';
import type { HostActivities } from '../activities/host.js';
import type { LegacyHostActivities, LegacyMainActivities } from '../activities/legacy.js';
import {
  SA,
  clientDisconnectedSignal,
  containerExitedSignal,
  describeQuery,
  heartbeatSignal,
  hostTaskQueue,
  programExitedSignal,
  terminateSignal,
  type CarriedState,
  type EndReason,
  type SessionResult,
  type SessionSnapshot,
  type SessionState,
  type SessionWorkflowInput,
} from './definitions.js';
import { sessionCurrentDetails } from './ui-metadata.js';

const MAIN_ACTIVITY_OPTIONS = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
} satisfies ActivityOptions;
/**
 * Activity proxies with a summary, which the Temporal UI shows on the activity: metadata of the
 * command, not part of what replay compares (test/replay.test.ts replays the histories recorded
 * before summaries existed).
 */
const db = (summary: string) => proxyActivities<DbActivities>({ ...MAIN_ACTIVITY_OPTIONS, summary });
const drains = (summary: string) => proxyActivities<LegacyMainActivities>({ ...MAIN_ACTIVITY_OPTIONS, summary });

/**
 * A history this long continues as new even if the server has not suggested it yet; the server's
 * suggestion usually comes first.
 */
const HISTORY_EVENTS_CEILING = 20_000;

/**
 * A heartbeat deadline whose timer the workflow sees this late (a fraction of the heartbeat timeout, at
 * least a second) passed while no workflow task could run on it: the Temporal server, or the way to it,
 * was down, so the portal's heartbeats could not arrive either (heartbeats that did arrive come in the
 * same task as the overdue timer, and are seen first).
 */
const lateAfterMs = (heartbeatTimeoutS: number) => Math.max(1000, (heartbeatTimeoutS * 1000) / 6);

interface Ending {
  reason: EndReason;
  message: string | null;
  by: string | null;
  exitCode: number | null;
}

export async function sessionWorkflow(input: SessionWorkflowInput): Promise<SessionResult> {
  const host = proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(input.stack),
    // Provisioning is retried a few times for engine hiccups; a bad image fails for good at once.
    startToCloseTimeout: '2 minutes',
    // No worker serving the stack's host queue: fail rather than wait in `provisioning` forever.
    scheduleToStartTimeout: '5 minutes',
    retry: { initialInterval: '1 second', maximumAttempts: 5, nonRetryableErrorTypes: ['ProvisionError'] },
    summary: `Provision the session's container on a host of stack ${input.stack}`,
  });
  const teardown = (summary: string) => proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(input.stack),
    startToCloseTimeout: `${input.stopGraceS + 60} seconds`,
    // Teardown must eventually happen: retried without a limit, with a capped interval.
    retry: { initialInterval: '1 second', maximumInterval: '1 minute' },
    summary,
  });

  const s: CarriedState = input.carried ?? {
    state: 'provisioning',
    containerId: null,
    readyAt: null,
    connectedAt: null,
    connections: {},
    runs: 1,
  };
  let ending: Ending | null = null;
  let endedAt: string | null = null;
  let stateChanged = false;
  let hostNeverAnswered = false;

  const end = (e: Ending) => {
    if (!ending && s.state !== 'ending' && s.state !== 'ended') ending = e;
  };

  setHandler(heartbeatSignal, ({ connection_id }) => {
    if (ending || s.state === 'ending' || s.state === 'ended') return;
    s.connections[connection_id] = Date.now();
    if (s.state === 'waiting_for_client') {
      s.state = 'active';
      s.connectedAt = new Date().toISOString();
      stateChanged = true;
    }
  });
  setHandler(clientDisconnectedSignal, ({ connection_id, reason }) => {
    delete s.connections[connection_id];
    if (s.state === 'active' && Object.keys(s.connections).length === 0) {
      end({ reason: 'disconnect', message: reason ?? 'the client disconnected', by: null, exitCode: null });
    }
  });
  setHandler(terminateSignal, ({ reason, by }) => {
    end({ reason: 'terminated', message: reason ?? 'terminated', by: by ?? null, exitCode: null });
  });
  setHandler(containerExitedSignal, ({ container_id, exit_code, lost, oom_killed, message }) => {
    if (s.containerId && container_id && container_id !== s.containerId) return;
    if (lost) {
      end({ reason: 'container_lost', message: message ?? 'the container vanished outside essh', by: null, exitCode: exit_code });
    } else {
      const oom = oom_killed ? 'the container ran out of memory and was killed' : null;
      end({ reason: 'exit', message: oom ?? message ?? null, by: null, exitCode: exit_code });
    }
  });
  // The portal saw the session's program (its docker exec) exit: the session ends with its exit code.
  setHandler(programExitedSignal, ({ exit_code, oom_killed }) => {
    const oom = oom_killed ? `the program ran out of the container's ${input.containerSizeMb} MB of memory and was killed` : null;
    end({ reason: 'exit', message: oom, by: null, exitCode: exit_code });
  });
  setHandler(describeQuery, (): SessionSnapshot => ({
    id: input.operationId,
    operation_id: input.operationId,
    workflow_id: workflowInfo().workflowId,
    app: input.app.handle,
    account: input.account.handle,
    stack: input.stack,
    user: input.user,
    state: s.state,
    end_reason: ending?.reason ?? null,
    end_message: ending?.message ?? null,
    ended_by: ending?.by ?? null,
    exit_code: ending?.exitCode ?? null,
    command: input.command,
    container_size_mb: input.containerSizeMb,
    container_id: s.containerId,
    created_at: input.createdAt,
    connected_at: s.connectedAt,
    ended_at: endedAt,
    expires_at: input.expiresAt,
    connections: Object.keys(s.connections),
  }));

  /** What the Temporal UI shows as the session's current details: ids, handles, state and end, never personal data. */
  const showDetails = () =>
    setCurrentDetails(sessionCurrentDetails(input, {
      state: s.state, containerId: s.containerId, clients: Object.keys(s.connections).length, runs: s.runs,
      end: ending ? { reason: ending.reason, exitCode: ending.exitCode, message: ending.message } : null,
    }));
  showDetails();

  const publish = async (state: SessionState) => {
    s.state = state;
    showDetails();
    upsertSearchAttributes([
      { key: SA.state, value: state },
      ...(ending ? [{ key: SA.endReason, value: ending.reason }] : []),
    ]);
    await db(`Record the session as ${state}`).recordSessionState({
      operationId: input.operationId,
      state,
      containerId: s.containerId,
      connectedAt: s.connectedAt,
      endedAt,
      endReason: ending?.reason ?? null,
      endMessage: ending?.message ?? null,
      endedBy: ending?.by ?? null,
      exitCode: ending?.exitCode ?? null,
    });
  };

  const expiresAtMs = Date.parse(input.expiresAt);

  /** The earliest moment something ends the session unless a signal comes first. */
  const nextDeadline = (): { at: number; ending: Ending } => {
    let at = expiresAtMs;
    let why: Ending = { reason: 'expired', message: 'the maximum session duration passed', by: null, exitCode: null };
    if (s.state === 'waiting_for_client' && s.readyAt) {
      const connectBy = Date.parse(s.readyAt) + input.connectTimeoutS * 1000;
      if (connectBy < at) {
        at = connectBy;
        why = { reason: 'connect_timeout', message: `no client attached within ${input.connectTimeoutS} s`, by: null, exitCode: null };
      }
    } else if (s.state === 'active') {
      const last = Math.max(Date.parse(s.connectedAt ?? input.createdAt), ...Object.values(s.connections), s.heartbeatGraceFrom ?? 0);
      const silentBy = last + input.heartbeatTimeoutS * 1000;
      if (silentBy < at) {
        at = silentBy;
        why = { reason: 'disconnect', message: `no heartbeat for ${input.heartbeatTimeoutS} s`, by: null, exitCode: null };
      }
    }
    return { at, ending: why };
  };

  try {
    if (s.state === 'provisioning') {
      // The record has said `provisioning` since the API created it; its status change (queued →
      // running) need not hold up the container, so both go at once: one workflow task and one
      // activity round trip less before the session is ready (see bench/).
      try {
        const provisioning = host.provisionContainer({
          operationId: input.operationId,
          appId: input.app.id,
          command: input.command,
          containerSizeMb: input.containerSizeMb,
          cpus: input.cpus,
          account: input.account.handle,
          app: input.app.handle,
          stack: input.stack,
          instanceId: input.instanceId,
          pidsLimit: input.pidsLimit,
          tty: input.tty,
          startOnAttach: input.startOnAttach,
        });
        const [{ containerId }] = await Promise.all([provisioning, publish('provisioning')]);
        s.containerId = containerId;
        s.readyAt = new Date().toISOString();
        await publish('waiting_for_client');
        // A start-on-attach container is attached to as soon as it exists: the client's first
        // heartbeat may have come while it was provisioned (one during the publish above already did this).
        const stillWaiting = (s.state as SessionState) === 'waiting_for_client';
        if (!ending && stillWaiting && Object.keys(s.connections).length > 0) {
          s.state = 'active';
          s.connectedAt = new Date().toISOString();
          stateChanged = true;
        }
      } catch (err) {
        if (isCancellation(err)) throw err;
        hostNeverAnswered = isScheduleToStartTimeout(err);
        end({ reason: 'provision_failed', message: failureMessage(err, input.stack), by: null, exitCode: null });
      }
    }

    while (!ending) {
      if (stateChanged) {
        stateChanged = false;
        await publish(s.state);
        continue;
      }
      const deadline = nextDeadline();
      const wait = deadline.at - Date.now();
      if (wait <= 0) {
        // The heartbeat deadline passed while the workflow could not run (a Temporal outage): the client
        // gets one more heartbeat timeout from now, once per silence, before it counts as gone. Sessions
        // whose history went past here on the code before this take the old way (docs/workflow-versioning.md).
        const lastBeat = Math.max(0, ...Object.values(s.connections));
        if (
          deadline.ending.reason === 'disconnect' && -wait > lateAfterMs(input.heartbeatTimeoutS) &&
          (s.heartbeatGraceFrom ?? 0) < lastBeat && patched('heartbeat-grace-after-outage')
        ) {
          s.heartbeatGraceFrom = Date.now();
          log.warn('heartbeat deadline seen late: one more heartbeat timeout for the client', { lateMs: -wait });
          continue;
        }
        end(deadline.ending);
        break;
      }
      const mustContinueAsNew = () =>
        workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > HISTORY_EVENTS_CEILING;
      // Heartbeats only move the deadline; they do not wake this loop, so a steady stream of them
      // costs one timer per heartbeat timeout rather than one per heartbeat.
      await condition(() => ending !== null || stateChanged || mustContinueAsNew(), wait, { summary: timerSummary(deadline.ending.reason, input) });
      if (!ending && !stateChanged && mustContinueAsNew()) {
        await condition(allHandlersFinished);
        if (!ending && !stateChanged) {
          log.info('continuing as new', { historyLength: workflowInfo().historyLength });
          await continueAsNew<typeof sessionWorkflow>({ ...input, carried: { ...s, runs: s.runs + 1 } });
        }
      }
    }
  } catch (err) {
    if (isCancellation(err)) {
      end({ reason: 'terminated', message: 'the workflow was cancelled', by: 'temporal', exitCode: null });
    } else {
      throw err;
    }
  } finally {
    // Runs however the session ends, cancellation included; every step below is idempotent.
    // (A continue-as-new also passes through here: it is not an ending, so nothing is torn down.)
    if (ending) await CancellationScope.nonCancellable(() => finish(ending!));
  }

  async function finish(e: Ending) {
    await publish('ending');
    // Exec sessions (the program runs by docker exec; the portal journals its output on the host):
    // one teardown on the host removes the container and closes the journal. Sessions started before
    // replay and finish the old way below (docs/workflow-versioning.md).
    if (patched('exec-sessions')) {
      if (!hostNeverAnswered) {
        await teardown(`Remove the container and close the output journal (${e.reason})`).endSession({
          operationId: input.operationId, containerId: s.containerId, stopGraceS: input.stopGraceS, createdAt: input.createdAt,
          endReason: e.reason, endMessage: e.message, endedBy: e.by, exitCode: e.exitCode,
        });
      }
      endedAt = new Date().toISOString();
      await publish('ended');
      return;
    }
    // No host worker ever took the container: there is nothing on a host to stop, and waiting for
    // one would keep the session open forever.
    if (!hostNeverAnswered) {
      await finishCapture();
      await teardown('Remove the container').removeContainer({ operationId: input.operationId, stopGraceS: input.stopGraceS });
    }
    endedAt = new Date().toISOString();
    await publish('ended');
    await drains('Tell the log drains the session ended').recordSessionEnded({
      operationId: input.operationId, endReason: e.reason, endMessage: e.message, endedBy: e.by, exitCode: e.exitCode, endedAt,
    });
  }

  /**
   * Stops the container and lets the host's capture read and commit all its output before the container
   * (and with it the engine's log the capture reads) is removed; the "ended" event then comes last.
   * Bounded: after a few minutes, or if the host cannot be reached, teardown goes on regardless.
   */
  async function finishCapture() {
    const capture = proxyActivities<LegacyHostActivities>({
      taskQueue: hostTaskQueue(input.stack),
      scheduleToCloseTimeout: `${input.stopGraceS + 300} seconds`,
      heartbeatTimeout: '30 seconds',
      retry: { initialInterval: '1 second', maximumAttempts: 3 },
      summary: 'Stop the container and let the capture read all its output',
    });
    try {
      await capture.stopAndFinishCapture({ operationId: input.operationId, stopGraceS: input.stopGraceS, timeoutMs: 240_000 });
    } catch (err) {
      log.warn('the capture did not confirm the end of the output', { error: String(err) });
    }
  }

  const e = ending as Ending | null;
  if (!e) throw ApplicationFailure.nonRetryable('session loop left without an end reason');
  return { end_reason: e.reason, exit_code: e.exitCode, end_message: e.message, ended_by: e.by, runs: s.runs };
}

/** What the wait loop's timer is for, as the Temporal UI shows it. */
function timerSummary(reason: EndReason, input: SessionWorkflowInput): string {
  if (reason === 'connect_timeout') return `Connect timeout: no client within ${input.connectTimeoutS} s of the container being ready`;
  if (reason === 'disconnect') return `Heartbeat timeout: no heartbeat from the client for ${input.heartbeatTimeoutS} s`;
  return `Maximum session duration: the session expires at ${input.expiresAt}`;
}

function isScheduleToStartTimeout(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

function failureMessage(err: unknown, stack?: string): string {
  if (isScheduleToStartTimeout(err)) {
    return `no host worker picked up the container for stack ${stack} (task queue ${hostTaskQueue(stack ?? '')}); start one with ESSH_HOST_STACKS=${stack}`;
  }
  let cur: any = err;
  // Activity failures wrap the activity's own error as their cause; its message is the useful one.
  while (cur?.cause) cur = cur.cause;
  return String(cur?.message ?? err);
}
