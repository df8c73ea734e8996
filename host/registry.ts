import { statfs } from 'node:fs/promises';
import os from 'node:os';
import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { PeriodicPass } from '../lib/periodic.js';
import type { HostRow } from '../journal/tables.js';

/** What a stack host tells the rest of essh about itself (the `hosts` table). */
export interface HostAnnouncement {
  hostId: string;
  stacks: string[];
  /** Where its SSH portal answers (the `connect` blocks of its stacks' sessions); absent without a portal. */
  ssh?: { host: string; port: number; hostKey: string };
  /** Its internal endpoint (recordings), for the API's processes. */
  internalUrl?: string;
  /** The directory whose file system holds its journals: its free space is reported. */
  dataDir: string;
  /** The most live sessions placement may put here (ESSH_HOST_MAX_SESSIONS). */
  maxSessions?: number;
  /** Its warm pool's figures, read at each report; absent for a host without a pool. */
  pool?: () => Promise<{ ready: number; target: number }>;
}

/**
 * Keeps this host's row in `hosts` current: at start, whenever a part of it changes (the portal's
 * port, the internal URL), and every interval with the free disk space under the data dir and the
 * free memory, which placement reads (services/placement.ts).
 */
export class HostRegistration {
  private readonly passes: PeriodicPass<void>;

  constructor(private readonly deps: { db: Db; log: Logger; intervalS: number }, private announcement: HostAnnouncement) {
    this.passes = new PeriodicPass(() => this.write(), { intervalS: deps.intervalS, log: deps.log, what: 'host registration' });
  }

  async start(): Promise<void> {
    await this.write();
    this.passes.start();
  }

  async update(change: Partial<HostAnnouncement>): Promise<void> {
    this.announcement = { ...this.announcement, ...change };
    await this.passes.runOnce();
    // A pass already under way may have written the old announcement.
    await this.write();
  }

  stop(): Promise<void> {
    return this.passes.stop();
  }

  private async write(): Promise<void> {
    const a = this.announcement;
    const fs = await statfs(a.dataDir).catch(() => null);
    // A report without its pool's figures beats none: the host's liveness rides on this row.
    const pool = a.pool ? await a.pool().catch((err) => {
      this.deps.log.warn({ err }, 'reading the warm pool for the host report failed');
      return null;
    }) : null;
    const row = {
      stacks: JSON.stringify(a.stacks),
      ssh_host: a.ssh?.host ?? null,
      ssh_port: a.ssh?.port ?? null,
      ssh_host_key: a.ssh?.hostKey ?? null,
      internal_url: a.internalUrl ?? null,
      free_disk_bytes: fs ? fs.bavail * fs.bsize : null,
      // libuv reads MemAvailable from /proc/meminfo: what new containers can have without swapping out others.
      free_memory_bytes: os.freemem(),
      max_sessions: a.maxSessions ?? null,
      pool_ready: pool?.ready ?? null,
      pool_target: pool?.target ?? null,
      // Never `cordoned`: the operators' API is its one writer, and a restarted host stays cordoned.
      seen_at: nowIso(),
    };
    await this.deps.db.insertInto('hosts').values({ host_id: a.hostId, ...row })
      .onConflict((oc) => oc.column('host_id').doUpdateSet(row)).execute();
  }
}

export async function hostById(db: Db, hostId: string): Promise<HostRow | undefined> {
  return db.selectFrom('hosts').selectAll().where('host_id', '=', hostId).executeTakeFirst();
}

/** Live sessions per host: placed on it and not `ending` or `ended` (a session stops counting as its plan slot does). */
export async function liveSessionsOn(db: Pick<Transaction<Database>, 'selectFrom'>, hostIds: string[]): Promise<Map<string, number>> {
  if (hostIds.length === 0) return new Map();
  const rows = await db.selectFrom('operations')
    .select(['host_id', (eb) => eb.fn.countAll<number>().as('n')])
    .where('host_id', 'in', hostIds)
    .where('state', 'not in', ['ending', 'ended'])
    .groupBy('host_id')
    .execute();
  return new Map(rows.map((r) => [r.host_id!, Number(r.n)]));
}
