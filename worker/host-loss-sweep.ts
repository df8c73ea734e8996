import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { PeriodicPass } from '../lib/periodic.js';
import { hostLostSignal, sessionWorkflowId } from '../shapes/session-workflow.js';

/**
 * Ends the sessions of a host that stopped reporting: every pass, each live session whose container is on
 * a host whose `hosts.seen_at` is older than `staleS` (by its journal's host, recorded at provisioning)
 * gets the `hostLost` signal, and its workflow ends it `container_lost` without asking that host for a
 * teardown (workflows/session.ts). Runs in the `worker` role, never on a host; any number of replicas may
 * run it: a workflow takes the first signal and ignores the rest, and a session is signalled again every
 * pass until its record says it ended. A session ends within `staleS + intervalS` (and a workflow task)
 * of its host's last report.
 */
export class HostLossSweep {
  private readonly passes: PeriodicPass<number>;

  constructor(private readonly deps: { db: Db; client: Client; staleS: number; intervalS: number; log: Logger }) {
    this.passes = new PeriodicPass(() => this.pass(), { intervalS: deps.intervalS, log: deps.log, what: 'host-loss sweep' });
  }

  start() {
    this.passes.start();
  }

  stop() {
    return this.passes.stop();
  }

  /** One pass now; resolves with how many sessions it signalled. */
  async runOnce(): Promise<number> {
    return (await this.passes.runOnce()) ?? 0;
  }

  private async pass(): Promise<number> {
    const { db, client, log, staleS } = this.deps;
    const staleBefore = new Date(Date.now() - staleS * 1000).toISOString();
    // From the silent hosts (few rows) to their sessions by index, rather than through every record.
    const silent = db.selectFrom('hosts as h').where('h.seen_at', '<', staleBefore);
    // The sessions each provisioned, whose journal it has not closed (closed: its teardown ran)…
    const provisioned = silent
      .innerJoin('session_journals as sj', 'sj.host_id', 'h.host_id')
      .innerJoin('operations as o', 'o.id', 'sj.operation_id')
      .where('sj.ended_at', 'is', null);
    // …and those placed on it (services/placement.ts) that it never provisioned: their provisioning
    // waits on its queue.
    const placed = silent
      .innerJoin('operations as o', 'o.host_id', 'h.host_id')
      .leftJoin('session_journals as sj', 'sj.operation_id', 'o.id')
      .where('sj.operation_id', 'is', null);
    const left = await provisioned.select(['h.host_id', 'h.seen_at', 'o.id']).where('o.state', '!=', 'ended')
      .unionAll(placed.select(['h.host_id', 'h.seen_at', 'o.id']).where('o.state', '!=', 'ended'))
      .execute();
    let signalled = 0;
    for (const { host_id: hostId, seen_at: lastSeenAt, id } of left) {
      try {
        await client.workflow.getHandle(sessionWorkflowId(Number(id))).signal(hostLostSignal, { hostId, lastSeenAt });
        signalled++;
      } catch (err) {
        // A closed workflow: the operations reconciler closes its record.
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      }
    }
    if (signalled) log.warn({ sessions: signalled, hosts: [...new Set(left.map((r) => r.host_id))] }, 'ending the sessions of hosts that stopped reporting');
    return signalled;
  }
}
