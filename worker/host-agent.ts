import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { removeSessionContainer } from '../activities/host.js';
import { LABELS, dockerStatus } from '../lib/docker.js';
import { ContainerEventFollower, type ContainerEvent } from '../lib/docker-events.js';
import { PeriodicPass } from '../lib/periodic.js';
import { stopAndFinishCapture } from '../drains/activities.js';
import type { CaptureWaiter } from '../drains/capture-thread.js';
import { containerExitedSignal, sessionWorkflowId, type ContainerExitedSignal } from '../workflows/definitions.js';

/** How long the reconciler lets the capture finish reading a container before removing it anyway (with the 15 s interval, within the 60 s it has). */
const CAPTURE_WAIT_MS = 40_000;

/**
 * Watches one stack host's Docker engine for the sessions' containers:
 * - a container that dies is reported to its workflow (`containerExited`), at once from the event
 *   stream, and again by the periodic pass in case an event was missed while the agent was down;
 * - a container whose workflow is closed or missing is removed (the reconciler).
 * One agent runs beside each host worker, since only that host can reach its own engine.
 */
export class HostAgent {
  private events?: ContainerEventFollower;
  /** Aborted by stop(): also ends a pass's wait for a capture, so that stopping never waits out CAPTURE_WAIT_MS. */
  private readonly stopping = new AbortController();
  /** Containers the engine was asked to kill, until their `die` event arrives. */
  private readonly killedThroughEngine = new Set<string>();
  private readonly passes: PeriodicPass<void>;

  constructor(
    private readonly deps: {
      docker: Docker;
      client: Client;
      instanceId: string;
      stopGraceS: number;
      intervalS: number;
      log: Logger;
      /** The host's output capture, waited for before a container is removed. */
      capture?: CaptureWaiter;
    },
  ) {
    this.passes = new PeriodicPass(() => this.reconcile(), { intervalS: deps.intervalS, log: deps.log, what: 'reconcile pass' });
  }

  async start(): Promise<void> {
    this.events = new ContainerEventFollower({
      docker: this.deps.docker,
      // `kill` comes before `die` when someone (docker kill, docker stop, docker rm -f) ends the
      // container through the engine; essh's own teardown does so too, but only once its workflow is
      // already ending, which then ignores the report.
      events: ['kill', 'die'],
      labels: [`${LABELS.instance}=${this.deps.instanceId}`],
      onEvent: (e) => {
        if (e.Action === 'kill') {
          this.killedThroughEngine.add(e.id);
          return;
        }
        void this.onDie(e).catch((err) => this.deps.log.warn({ err }, 'reporting a container exit failed'));
      },
      onResumed: () => void this.reconcileOnce(),
      log: this.deps.log,
      what: 'host agent',
    });
    await this.events.start();
    await this.reconcileOnce();
    this.passes.start();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.events?.stop();
    await this.passes.stop();
  }

  private async onDie(event: ContainerEvent) {
    const attrs = event.Actor?.Attributes ?? {};
    const operationId = attrs[LABELS.operationId];
    if (!operationId) return;
    const killed = this.killedThroughEngine.delete(event.id);
    await this.reportExit(operationId, event.id, attrs.exitCode !== undefined ? Number(attrs.exitCode) : null, killed);
  }

  /** Tells the workflow how its container ended: by itself (`exit`), or removed from outside (`lost`). */
  private async reportExit(operationId: string, containerId: string, exitCode: number | null, killedThroughEngine = false) {
    const { docker, client } = this.deps;
    const info = await docker.getContainer(containerId).inspect().catch((err) => {
      if (dockerStatus(err) === 404) return null;
      throw err;
    });
    // `docker rm -f` marks the container as being removed before it kills it.
    const lost = killedThroughEngine || !info || info.State.Status === 'removing' || info.State.Status === 'dead';
    const signal: ContainerExitedSignal = {
      container_id: containerId,
      exit_code: info?.State.ExitCode ?? exitCode,
      lost,
      oom_killed: info?.State.OOMKilled ?? false,
      message: lost ? 'the container was removed or killed outside essh' : undefined,
    };
    try {
      await client.workflow.getHandle(sessionWorkflowId(operationId)).signal(containerExitedSignal, signal);
    } catch (err) {
      // A workflow that has already closed needs no news; the reconciler removes what it left.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
  }

  /** One reconciliation pass; never runs twice at once. */
  async reconcileOnce(): Promise<void> {
    await this.passes.runOnce();
  }

  private async reconcile(): Promise<void> {
    const { docker, client, instanceId, stopGraceS, log } = this.deps;
    const containers = await docker.listContainers({
      all: true,
      filters: { label: [`${LABELS.instance}=${instanceId}`, LABELS.session] },
    });
    for (const c of containers) {
      if (this.stopping.signal.aborted) return;
      const operationId = c.Labels[LABELS.operationId];
      if (!operationId) continue;
      let running: boolean;
      try {
        const d = await client.workflow.getHandle(sessionWorkflowId(operationId)).describe();
        running = d.status.name === 'RUNNING';
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        running = false;
      }
      if (!running) {
        log.info({ operationId, container: c.Id.slice(0, 12) }, 'removing a container whose session workflow is closed');
        // A workflow closed by hand never ran its teardown, which lets the capture finish first:
        // removing the container deletes the log the capture may still be reading.
        if (this.deps.capture) {
          const finishing = stopAndFinishCapture(docker, this.deps.capture, c.Id, Number(operationId), stopGraceS, CAPTURE_WAIT_MS);
          // Stopping: the container stays, and the next start's pass removes it once its capture,
          // resumed from the committed position, has read the rest.
          if ((await untilAborted(finishing, this.stopping.signal)) === 'aborted') return;
        }
        await removeSessionContainer(docker, c.Id, stopGraceS);
      } else if (c.State === 'exited' || c.State === 'dead') {
        await this.reportExit(operationId, c.Id, null);
      }
    }
  }
}

/** `work`'s outcome, or 'aborted' as soon as `signal` is (the work itself goes on unobserved). */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T | 'aborted'> {
  if (signal.aborted) return 'aborted';
  let onAbort!: () => void;
  const aborted = new Promise<'aborted'>((resolve) => (onAbort = () => resolve('aborted')));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
