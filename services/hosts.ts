import type { Db } from '../lib/db.js';
import type { HostRow } from '../journal/tables.js';
import { liveSessionsOn } from '../host/registry.js';
import type { Host } from '../shapes/answers.js';
import { recordAudit } from './audit.js';
import { access, type Principal } from './auth.js';
import { notFound } from './errors.js';
import { pageOf, type Page, type PageRequest } from './pages.js';
import { DEFAULT_HOST_MAX_SESSIONS } from './placement.js';

/**
 * The stack hosts as operators see them (GET /hosts), and cordoning: a cordoned host takes no new
 * session (services/placement.ts) while its live ones go on. This service is the one writer of
 * `hosts.cordoned`; the hosts write the rest of their rows (host/registry.ts).
 */
export class HostsService {
  /** `staleS`: ESSH_HOST_STALE_S, after which a silent host is shown `stale` (placement skips it). */
  constructor(private readonly db: Db, private readonly opts: { staleS: number }) {}

  /**
   * Every host that ever reported, by id, paged as every list is. Hosts are keyed by their name, not a
   * row id, so the cursor is a position in that order: a host added between two pages may shift it by
   * one (a fleet has tens of hosts; one page holds them).
   */
  async list(p: Principal, page: PageRequest): Promise<Page<Host>> {
    access.requireOperator(p, 'list the hosts');
    const offset = page.after ?? 0;
    const rows = await this.db.selectFrom('hosts').selectAll().orderBy('host_id').offset(offset).limit(page.limit + 1).execute();
    const live = await liveSessionsOn(this.db, rows.map((r) => r.host_id));
    return pageOf(rows, page, (r) => offset + rows.indexOf(r) + 1, (r) => hostView(r, live.get(r.host_id) ?? 0, this.opts.staleS));
  }

  async get(p: Principal, hostId: string): Promise<Host> {
    access.requireOperator(p, 'see a host');
    const row = await this.db.selectFrom('hosts').selectAll().where('host_id', '=', hostId).executeTakeFirst();
    if (!row) throw notFound(`Host "${hostId}"`);
    return hostView(row, (await liveSessionsOn(this.db, [hostId])).get(hostId) ?? 0, this.opts.staleS);
  }

  /** Cordons (true) or uncordons a host; idempotent, and audited only when it changes something. */
  async setCordoned(p: Principal, hostId: string, cordoned: boolean): Promise<Host> {
    access.requireOperator(p, `${cordoned ? 'cordon' : 'uncordon'} a host`);
    await this.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('hosts').select(['host_id', 'cordoned']).where('host_id', '=', hostId).executeTakeFirst();
      if (!row) throw notFound(`Host "${hostId}"`);
      if (Number(row.cordoned) === (cordoned ? 1 : 0)) return;
      await trx.updateTable('hosts').set({ cordoned: cordoned ? 1 : 0 }).where('host_id', '=', hostId).execute();
      await recordAudit(trx, p, {
        action: cordoned ? 'host.cordoned' : 'host.uncordoned', target: { id: hostId, name: hostId }, accountIds: [], fields: ['cordoned'],
      });
    });
    return this.get(p, hostId);
  }
}

function hostView(r: HostRow, liveSessions: number, staleS: number): Host {
  const seenAt = r.seen_at;
  return {
    id: r.host_id,
    stacks: JSON.parse(r.stacks) as string[],
    live_sessions: liveSessions,
    max_sessions: r.max_sessions === null ? DEFAULT_HOST_MAX_SESSIONS : Number(r.max_sessions),
    free_disk_bytes: r.free_disk_bytes === null ? null : Number(r.free_disk_bytes),
    free_memory_bytes: r.free_memory_bytes === null ? null : Number(r.free_memory_bytes),
    ssh: r.ssh_host && r.ssh_port ? { host: r.ssh_host, port: Number(r.ssh_port) } : null,
    seen_at: seenAt,
    stale: Date.parse(seenAt) < Date.now() - staleS * 1000,
    cordoned: Number(r.cordoned) === 1,
    pool: r.pool_ready === null || r.pool_target === null ? null : { ready: Number(r.pool_ready), target: Number(r.pool_target) },
  };
}
