import { sql, type Transaction } from 'kysely';
import type { Database, DbEngine } from '../lib/db.js';
import type { HostRow } from '../journal/tables.js';
import { liveSessionsOn } from '../host/registry.js';
import { ApiError } from './errors.js';

/** The most live sessions a host that reported no limit of its own (a process from before placement) takes. */
export const DEFAULT_HOST_MAX_SESSIONS = 500;

/** A host of the stack as placement sees it: its row, its live sessions, and why it takes none, if it does not. */
export interface HostCapacity {
  host: HostRow;
  live: number;
  max: number;
  /** Why it takes no new session (full, cordoned, short of disk or memory); null: it has room. */
  refusal: string | null;
}

export interface PlacementRequest {
  stack: string;
  /** The session's memory limit: a host reporting less free memory takes it not. */
  containerSizeMb: number;
  minFreeDiskBytes: number;
  /** The portal of this host asked: the session goes there or nowhere (its client is connected to it). */
  onHost?: string;
  /**
   * A host silent this long takes no new session (ESSH_HOST_STALE_S): the same bound after which the
   * host-loss sweep ends its sessions, so a host is never both lost to the sweep and chosen here.
   */
  hostStaleS: number;
}

const mb = (b: number) => Math.floor(b / (1024 * 1024));

/** Whether a host row is one of `stack`'s hosts that has reported within the stale bound. */
function servesLive(h: HostRow, stack: string, freshSince: string): boolean {
  return h.seen_at > freshSince && (JSON.parse(h.stacks) as string[]).includes(stack);
}

/**
 * Every host of the stack that has reported recently, with its live sessions (sessions placed on it
 * and not yet `ending`) and whether it has room. `db` is the create transaction (placement) or the
 * database (the portal's refusal, GET /hosts).
 */
export async function stackHostsCapacity(
  db: Transaction<Database> | Pick<Transaction<Database>, 'selectFrom'>,
  req: Omit<PlacementRequest, 'onHost'>,
): Promise<HostCapacity[]> {
  const freshSince = new Date(Date.now() - req.hostStaleS * 1000).toISOString();
  const hosts = (await db.selectFrom('hosts').selectAll().where('seen_at', '>', freshSince).orderBy('host_id').execute())
    .filter((h) => servesLive(h, req.stack, freshSince));
  if (hosts.length === 0) return [];
  const counts = await liveSessionsOn(db, hosts.map((h) => h.host_id));
  return hosts.map((host) => capacityOf(host, counts.get(host.host_id) ?? 0, req));
}


function capacityOf(host: HostRow, live: number, req: Omit<PlacementRequest, 'onHost'>): HostCapacity {
  const max = host.max_sessions === null ? DEFAULT_HOST_MAX_SESSIONS : Number(host.max_sessions);
  const disk = host.free_disk_bytes === null ? null : Number(host.free_disk_bytes);
  const memory = host.free_memory_bytes === null ? null : Number(host.free_memory_bytes);
  let refusal: string | null = null;
  if (Number(host.cordoned) === 1) refusal = `host ${host.host_id} is cordoned`;
  else if (live >= max) refusal = `host ${host.host_id} is full (${live} of ${max} live sessions)`;
  else if (disk !== null && disk < req.minFreeDiskBytes) {
    refusal = `host ${host.host_id} is low on disk (${mb(disk)} MB free; it keeps ${mb(req.minFreeDiskBytes)} MB free)`;
  } else if (memory !== null && memory < req.containerSizeMb * 1024 * 1024) {
    refusal = `host ${host.host_id} is short of memory (${mb(memory)} MB free, the session may use ${req.containerSizeMb} MB)`;
  }
  return { host, live, max, refusal };
}

/** Where the host's portal answers, for a sentence that sends a client there. */
export function portalAddress(h: HostRow): string {
  return h.ssh_host && h.ssh_port ? `${h.ssh_host}:${h.ssh_port}` : `host ${h.host_id}`;
}

const byRoom = (a: HostCapacity, b: HostCapacity) => (b.max - b.live) - (a.max - a.live) || a.host.host_id.localeCompare(b.host.host_id);

/**
 * Chooses the host a new session goes to, inside the create transaction (which already holds the
 * account's lock; on SQLite, the database's write lock): of the stack's live hosts that have room,
 * the one with the most. Null when the stack has no live host at all: the session then goes to the
 * stack's shared queue and waits there for a host, as before placement. Throws a 503 naming every
 * host and why it takes none when none has room.
 *
 * On PostgreSQL creates on other accounts run at the same time: the chosen host's row is locked and
 * its sessions counted again under the lock, so two of them cannot both take its last slot; one that
 * finds it full then tries the next host.
 */
export async function placeSession(trx: Transaction<Database>, engine: DbEngine, req: PlacementRequest): Promise<HostRow | null> {
  const all = await stackHostsCapacity(trx, req);
  if (all.length === 0) return null;
  const wanted = req.onHost ? all.filter((c) => c.host.host_id === req.onHost) : all;
  // A portal on a host that does not serve the stack (a shared portal) places like the API does.
  const candidates = (wanted.length > 0 ? wanted : all).filter((c) => c.refusal === null).sort(byRoom);
  for (const c of candidates) {
    if (engine !== 'postgres') return c.host;
    // One host's lock at a time: a host found full under its lock is let go (the savepoint's rollback
    // releases the lock) before the next is locked, so two creates never wait on each other's hosts.
    await sql`SAVEPOINT placement`.execute(trx);
    const locked = await trx.selectFrom('hosts').selectAll().where('host_id', '=', c.host.host_id).forUpdate().executeTakeFirst();
    const live = locked ? (await liveSessionsOn(trx, [locked.host_id])).get(locked.host_id) ?? 0 : 0;
    if (locked && capacityOf(locked, live, req).refusal === null) return locked;
    await sql`ROLLBACK TO SAVEPOINT placement`.execute(trx);
  }
  if (req.onHost && wanted.length > 0) {
    const elsewhere = all.filter((c) => c.host.host_id !== req.onHost && c.refusal === null).sort(byRoom)[0];
    const why = wanted[0]!.refusal ?? `host ${req.onHost} has just taken its last session`;
    throw new ApiError(503, 'unavailable', elsewhere
      ? `This portal's ${why}, so it takes no new session; host ${elsewhere.host.host_id} of stack ${req.stack} has room: connect to ${portalAddress(elsewhere.host)} instead.`
      : `This portal's ${why}, and no other host of stack ${req.stack} has room (${others(all, req.onHost)}). Try again when a session ends, or tell an operator.`);
  }
  throw new ApiError(503, 'unavailable',
    `No host of stack ${req.stack} can take a new session now: ${all.map((c) => c.refusal ?? `host ${c.host.host_id} has just taken its last session`).join('; ')}. ` +
    'Try again when a session ends, or ask an operator to add a host to the stack or uncordon one.',
    { hosts: all.map((c) => ({ id: c.host.host_id, live_sessions: c.live, max_sessions: c.max, refusal: c.refusal })) });
}

function others(all: HostCapacity[], except: string): string {
  const rest = all.filter((c) => c.host.host_id !== except);
  return rest.length ? rest.map((c) => c.refusal).join('; ') : 'it has no other live host';
}
