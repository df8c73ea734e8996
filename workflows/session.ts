import {
  type ActivityOptions,
  CancellationScope,
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
import { RootCancellationScope } from '@temporalio/workflow/lib/cancellation-scope.js';
import type { DbActivities } from '../activities/db.js';
import type { HostActivities } from '../activities/host.js';
import type { LegacyHostActivities, LegacyMainActivities } from '../activities/legacy.js';
import {
  SA,
  clientDisconnectedSignal,
  containerExitedSignal,
  describeQuery,
  heartbeatSignal,
  hostLostSignal,
  idleTimeoutSignal,
  hostOwnTaskQueue,
  hostTaskQueue,
  programExitedSignal,
  terminateSignal,
  type SessionResult,
  type SessionWorkflowInput,
} from '../shapes/session-workflow.js';
import type { SessionState } from '../shapes/enumerations.js';
import { SessionMachine, type Ending } from './session-state.js';

/**
 * A history this long continues as new even if the server has not suggested it yet; the server's
 * suggestion usually comes first.
 */
const HISTORY_EVENTS_CEILING = 20_000;

/**
 * The session's workflow: its state machine (workflows/session-state.ts) moved by the signals, the
 * wait loop's timer and the activities' outcomes; each state recorded as it is entered; the
 * container torn down however the session ends.
 */
export async function sessionWorkflow(input: SessionWorkflowInput): Promise<SessionResult> {
  const run = sessionActivities(input);
  // Only detached jobs take the patch: every other session issues the same commands as before.
  const m = new SessionMachine(input, { detached: input.detach === true && patched('detached-jobs') });

  setHandler(heartbeatSignal, ({ connection_id }) => m.heartbeat(connection_id, Date.now(), () => patched('heartbeat-grace-on-late-beat')));
  setHandler(clientDisconnectedSignal, ({ connection_id, reason }) => m.clientDisconnected(connection_id, reason));
  setHandler(terminateSignal, ({ reason, by }) => m.terminate(reason, by));
  setHandler(containerExitedSignal, (signal) => m.containerExited(signal));
  setHandler(programExitedSignal, (signal) => m.programExited(signal));
  const onHost = hostActivities(m);
  // Only a workflow that gets one of these two signals takes its patch (no earlier history has one).
  setHandler(hostLostSignal, (signal) => { if (patched('host-lost') && m.hostLost(signal)) onHost.cancelAll(); });
  setHandler(idleTimeoutSignal, (signal) => { if (patched('idle-timeout')) m.idle(signal); });
  setHandler(describeQuery, () => m.snapshot(workflowInfo().workflowId));
  setCurrentDetails(m.details());

  const publish = async (state: SessionState) => {
    m.enter(state);
    setCurrentDetails(m.details());
    upsertSearchAttributes([{ key: SA.state, value: state }, ...(m.ending ? [{ key: SA.endReason, value: m.ending.reason }] : [])]);
    await run.recordSessionState(`Record the session as ${state}`, m.record());
  };

  try {
    if (m.state === 'provisioning') {
      // The record has said `provisioning` since the API created it; its status change (queued →
      // running) need not hold up the container, so both go at once: one workflow task and one
      // activity round trip less before the session is ready (see bench/).
      try {
        // A lost host cancels the provisioning: its cancellation leaves as a workflow cancellation
        // would, and the ending the signal set stays (the first ending decided wins).
        const [{ containerId }] = await Promise.all([onHost.run(() => run.provisionContainer()), publish('provisioning')]);
        m.provisioned(containerId, Date.now());
        if (m.detached) {
          // The program starts at once, on the host, and the session ends when it does; not awaited, so
          // terminate, expiry and the record go on meanwhile.
          onHost.run(() => run.runDetachedProgram(containerId)).then(
            (exit) => m.programExited(exit),
            (err) => isCancellation(err) || m.detachedProgramLost(err),
          );
          await publish('active');
        } else {
          await publish('waiting_for_client');
          m.readyForClients(Date.now());
        }
      } catch (err) {
        if (isCancellation(err)) throw err;
        m.provisionFailed(err);
      }
    }

    while (!m.ending) {
      const unpublished = m.takeUnpublished();
      if (unpublished) {
        await publish(unpublished);
        continue;
      }
      const deadline = m.nextDeadline();
      const now = Date.now();
      const wait = deadline.at - now;
      if (wait <= 0) {
        // Sessions whose history went past a late heartbeat deadline on the code before the grace
        // take the old way (docs/workflow-versioning.md).
        if (m.deadlinePassed(deadline, now, () => patched('heartbeat-grace-after-outage'), () => patched('heartbeat-grace-scales-with-outage'))) {
          log.warn('heartbeat deadline seen late: a grace of one heartbeat timeout plus the lateness for the client', { lateMs: -wait });
          continue;
        }
        break;
      }
      // A detached job's program is followed by an activity of this run: a new run would lose its exit.
      // (It gets no heartbeats, so its history stays short.)
      const mustContinueAsNew = () => !m.detached &&
        (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > HISTORY_EVENTS_CEILING);
      // Heartbeats only move the deadline; they do not wake this loop, so a steady stream of them
      // costs one timer per heartbeat timeout rather than one per heartbeat.
      await condition(() => m.hasNews || mustContinueAsNew(), wait, { summary: deadline.summary });
      if (!m.hasNews && mustContinueAsNew()) {
        await condition(allHandlersFinished);
        if (!m.hasNews) {
          log.info('continuing as new', { historyLength: workflowInfo().historyLength });
          await continueAsNew<typeof sessionWorkflow>({ ...input, carried: m.carryOver() });
        }
      }
    }
  } catch (err) {
    if (!isCancellation(err)) throw err;
    m.cancelled();
  } finally {
    // Runs however the session ends, cancellation included; every step below is idempotent.
    // (A continue-as-new also passes through here: it is not an ending, so nothing is torn down.)
    if (m.ending) await CancellationScope.nonCancellable(() => finish(m, run, publish, onHost));
  }
  return m.result();
}

async function finish(m: SessionMachine, run: SessionActivities, publish: (state: SessionState) => Promise<void>, onHost: HostActivityScopes) {
  const e = m.ending!;
  await publish('ending');
  // Exec sessions (the program runs by docker exec; the portal journals its output on the host):
  // one teardown on the host removes the container and closes the journal. Sessions started before
  // replay and finish the old way below (docs/workflow-versioning.md). A lost host gets no teardown:
  // its reconciler removes the container, and closes the journal, when it comes back.
  if (patched('exec-sessions')) {
    if (!m.hostNeverAnswered) await onHost.unlessLost(() => run.endSession(`Remove the container and close the output journal (${e.reason})`, m.containerId, e, m.detached));
    m.tornDown(Date.now());
    await publish('ended');
    return;
  }
  // No host worker ever took the container: there is nothing on a host to stop, and waiting for
  // one would keep the session open forever.
  if (!m.hostNeverAnswered) {
    await onHost.unlessLost(() => run.stopAndFinishCapture());
    await onHost.unlessLost(() => run.removeContainer());
  }
  const endedAt = m.tornDown(Date.now());
  await publish('ended');
  await run.recordSessionEnded(e, endedAt);
}

type HostActivityScopes = ReturnType<typeof hostActivities>;

/**
 * The session's activities on its host, each in a cancellation scope of its own that a `hostLost`
 * signal cancels: that host will not answer, and the workflow must not wait on its queue.
 */
function hostActivities(m: SessionMachine) {
  const live = new Set<CancellationScope>();
  // Teardown's scopes hang from a root of their own, which the workflow's cancellation never reaches
  // (teardown runs however the session ends). Children of `finish`'s non-cancellable scope would be
  // shielded too on new histories, but not when an older history of a cancelled workflow replays: the
  // SDK then lets the cancellation through to them (its NonCancellableScopesAreShieldedFromPropagation
  // flag is not in that history), and v1-cancel/v2-cancel fail to replay. Not in the SDK's index.
  const teardownRoot = new RootCancellationScope();
  const inScope = async <T>(scope: CancellationScope, activity: () => Promise<T>): Promise<T> => {
    live.add(scope);
    try {
      return await scope.run(activity);
    } finally {
      live.delete(scope);
    }
  };
  return {
    /** Runs it in a scope that the workflow's cancellation reaches, as before. */
    run: <T>(activity: () => Promise<T>) => inScope(new CancellationScope(), activity),
    /** Teardown: runs it unless the host is lost, or until it is; the workflow's cancellation does not stop it. */
    async unlessLost(activity: () => Promise<unknown>): Promise<void> {
      if (m.lostHost !== null) return;
      try {
        await inScope(new CancellationScope({ cancellable: true, parent: teardownRoot }), activity);
      } catch (err) {
        if (!(m.lostHost !== null && isCancellation(err))) throw err;
      }
    },
    cancelAll() {
      for (const scope of live) scope.cancel();
    },
  };
}

const MAIN_ACTIVITY_OPTIONS = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
} satisfies ActivityOptions;

type SessionActivities = ReturnType<typeof sessionActivities>;

/**
 * Every activity the workflow runs, with its options. `summary` is what the Temporal UI shows on the
 * activity: metadata of the command, not part of what replay compares (test/replay.test.ts replays the
 * histories recorded before summaries existed), hence a proxy per call.
 */
function sessionActivities(input: SessionWorkflowInput) {
  // Input is data: a history from before placement has no host and replays on the shared queue.
  const taskQueue = input.hostId ? hostOwnTaskQueue(input.stack, input.hostId) : hostTaskQueue(input.stack);
  const main = <A>(summary: string) => proxyActivities<A>({ ...MAIN_ACTIVITY_OPTIONS, summary });
  // Teardown must eventually happen: retried without a limit, with a capped interval.
  const teardown = (summary: string) => proxyActivities<HostActivities>({
    taskQueue, startToCloseTimeout: `${input.stopGraceS + 60} seconds`, retry: { initialInterval: '1 second', maximumInterval: '1 minute' }, summary,
  });
  const { operationId, stopGraceS } = input;
  return {
    recordSessionState: (summary: string, u: Parameters<DbActivities['recordSessionState']>[0]) =>
      main<DbActivities>(summary).recordSessionState(u),
    provisionContainer: () => proxyActivities<HostActivities>({
      taskQueue,
      // Provisioning is retried a few times for engine hiccups; a bad image fails for good at once.
      startToCloseTimeout: '2 minutes',
      // The activity beats every few seconds (activities/host.ts): silence means its worker is gone
      // (the host process stopped or killed with the task), and the attempt goes to a live worker in
      // seconds rather than at the start-to-close timeout, while a terminate waits on it.
      heartbeatTimeout: '30 seconds',
      // No worker serving the queue: fail rather than wait in `provisioning` forever. A placed session's
      // host was live a moment ago; if it has not taken the task within a minute it is gone, and the
      // session fails naming it (failureMessage) rather than leave its client waiting five minutes.
      scheduleToStartTimeout: input.hostId ? '1 minute' : '5 minutes',
      retry: { initialInterval: '1 second', maximumAttempts: 5, nonRetryableErrorTypes: ['ProvisionError'] },
      summary: input.hostId
        ? `Provision the session's container on host ${input.hostId} of stack ${input.stack}`
        : `Provision the session's container on a host of stack ${input.stack}`,
    }).provisionContainer({
      operationId, appId: input.app.id, command: input.command, containerSizeMb: input.containerSizeMb, cpus: input.cpus,
      account: input.account.handle, app: input.app.handle, stack: input.stack, instanceId: input.instanceId,
      pidsLimit: input.pidsLimit, tty: input.tty, startOnAttach: input.startOnAttach,
      ...(input.detach ? { detach: true } : {}),
    }),
    endSession: (summary: string, containerId: string | null, e: Ending, detached: boolean) => teardown(summary).endSession({
      operationId, containerId, stopGraceS, createdAt: input.createdAt,
      endReason: e.reason, endMessage: e.message, endedBy: e.by, exitCode: e.exitCode,
      ...(detached ? { detach: true } : {}),
    }),
    /**
     * A detached job's program, followed on the host until it exits (or its container goes). Run once:
     * a program with effects (a migration) must not run twice, so a host that stops following it ends
     * the session instead. Its heartbeats tell a host that is gone within a minute.
     */
    runDetachedProgram: (containerId: string) => proxyActivities<HostActivities>({
      taskQueue,
      startToCloseTimeout: Math.max(1000, Date.parse(input.expiresAt) - Date.now()) + (stopGraceS + 300) * 1000,
      heartbeatTimeout: '1 minute',
      retry: { maximumAttempts: 1 },
      summary: "Run the detached job's command in its container and follow it to its exit",
    }).runDetachedProgram({ operationId, containerId }),
    /**
     * Sessions before exec sessions: stops the container and lets the host's capture read and commit
     * all its output before the container is removed; the "ended" event then comes last. Bounded:
     * after a few minutes, or if the host cannot be reached, teardown goes on regardless.
     */
    stopAndFinishCapture: async () => {
      try {
        await proxyActivities<LegacyHostActivities>({
          taskQueue,
          scheduleToCloseTimeout: `${stopGraceS + 300} seconds`,
          heartbeatTimeout: '30 seconds',
          retry: { initialInterval: '1 second', maximumAttempts: 3 },
          summary: 'Stop the container and let the capture read all its output',
        }).stopAndFinishCapture({ operationId, stopGraceS, timeoutMs: 240_000 });
      } catch (err) {
        log.warn('the capture did not confirm the end of the output', { error: String(err) });
      }
    },
    removeContainer: () => teardown('Remove the container').removeContainer({ operationId, stopGraceS }),
    recordSessionEnded: (e: Ending, endedAt: string) => main<LegacyMainActivities>('Tell the log drains the session ended').recordSessionEnded({
      operationId, endReason: e.reason, endMessage: e.message, endedBy: e.by, exitCode: e.exitCode, endedAt,
    }),
  };
}
