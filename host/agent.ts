import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { LABELS, dockerStatus } from '../lib/docker.js';
import { ContainerEventFollower, type ContainerEvent } from '../lib/docker-events.js';
import { isOurs, type Installation } from '../lib/instance.js';
import { PeriodicPass } from '../lib/periodic.js';
import { runningSessionWorkflows } from '../domain/running-sessions.js';
import { containerExitedSignal, sessionWorkflowId, type ContainerExitedSignal } from '../shapes/session-workflow.js';
import { removeContainer, roleOf } from './containers.js';
import { noteOom } from './oom.js';

/**
 * Watches one stack host's Docker engine for the sessions' containers:
 * - a container that dies is reported to its workflow (`containerExited`), at once from the event
 *   stream, and again by the periodic pass in case an event was missed while the agent was down
 *   (a session's program exiting is the portal's to report: the container lives on until teardown);
 * - OOM kills are noted for the portal, which reports the program's end;
 * - a session container whose workflow is closed or missing is removed (the reconciler), and the
 *   journal of a session that ended without this host's teardown (it was lost meanwhile) is closed;
 * One agent runs beside each host worker, since only that host can reach its own engine.
 */
export class HostAgent {
  private events?: ContainerEventFollower;
  /** Containers the engine was asked to kill, until their `die` event arrives. */
  private readonly killedThroughEngine = new Set<string>();
  private readonly passes: PeriodicPass<void>;
  private stopped = false;

  constructor(
    private readonly deps: {
      docker: Docker;
      client: Client;
      installation: Installation;
      /** This host's id (ESSH_HOST_ID): the agent deals only with the containers it made. */
      hostId: string;
      stopGraceS: number;
      intervalS: number;
      log: Logger;
      /** Closes the journals of sessions that ended while this host was away (host/left-journals.ts). */
      closeLeftJournals?: () => Promise<unknown>;
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
      events: ['kill', 'die', 'oom'],
      // Any installation's: this one's may carry an earlier version's id too (lib/instance.ts).
      labels: [LABELS.instance],
      onEvent: (e) => this.onEvent(e),
      onResumed: () => void this.reconcileOnce(),
      log: this.deps.log,
      what: 'host agent',
    });
    await this.events.start();
    await this.reconcileOnce();
    this.passes.start();
  }

  /** When the agent's last reconcile pass succeeded (epoch ms): a stale figure means the agent is stuck or cannot reach the engine. */
  get lastPassAt(): number | undefined {
    return this.passes.lastSuccessAt;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.events?.stop();
    await this.passes.stop();
  }

  /**
   * Hosts of a stack may share one Docker engine (several host processes on one machine): each deals
   * with the containers it made, and those made before containers named their host. Another host's
   * leftovers wait for that host (its session ended `container_lost`: "removed when the host returns").
   */
  private isOwnHost(labels: Record<string, string | undefined>): boolean {
    const host = labels[LABELS.host];
    return host === undefined || host === this.deps.hostId;
  }

  private onEvent(e: ContainerEvent) {
    const attrs = e.Actor?.Attributes ?? {};
    if (!isOurs(this.deps.installation, attrs[LABELS.instance]) || !this.isOwnHost(attrs)) return;
    if (e.Action === 'oom') return noteOom(e.id);
    if (e.Action === 'kill') {
      this.killedThroughEngine.add(e.id);
      return;
    }
    const role = roleOf(attrs.name ?? '', this.deps.installation);
    if (role.kind !== 'session') return;
    const killed = this.killedThroughEngine.delete(e.id);
    void this.reportExit(role.operationId, e.id, attrs.exitCode !== undefined ? Number(attrs.exitCode) : null, killed)
      .catch((err) => this.deps.log.warn({ err }, 'reporting a container exit failed'));
  }

  /** Tells the workflow how its container ended: by itself (`exit`), or removed from outside (`lost`). */
  private async reportExit(operationId: number, containerId: string, exitCode: number | null, killedThroughEngine = false) {
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
    const { docker, client, installation, stopGraceS, log } = this.deps;
    const containers = await docker.listContainers({ all: true, filters: { label: [LABELS.instance] } });
    const listedRunning = await runningSessionWorkflows(client, log);
    for (const c of containers) {
      if (this.stopped) return;
      if (!isOurs(installation, c.Labels[LABELS.instance]) || !this.isOwnHost(c.Labels)) continue;
      const role = roleOf(c.Names[0] ?? '', installation);
      if (role.kind !== 'session') continue; // pool containers are the warm pool's
      const workflowId = sessionWorkflowId(role.operationId);
      let running = listedRunning.has(workflowId);
      if (!running) {
        try {
          const d = await client.workflow.getHandle(workflowId).describe();
          running = d.status.name === 'RUNNING';
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
      }
      if (!running) {
        log.info({ operationId: role.operationId, container: c.Id.slice(0, 12) }, 'removing a container whose session workflow is closed');
        await removeContainer(docker, c.Id, stopGraceS);
      } else if (c.State === 'exited' || c.State === 'dead') {
        await this.reportExit(role.operationId, c.Id, null);
      }
    }
    if (!this.stopped) await this.deps.closeLeftJournals?.();
  }
}
