import net from 'node:net';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { PortalLimits } from '../lib/config.js';

/**
 * Which limit turned a connection away (`evicted`: an authenticating one closed to make room for a
 * newcomer; `idle_per_user`: a user's longest-idle authenticated one closed past the per-user cap).
 */
export type PortalRefusal = 'connections' | 'authenticating' | 'authenticating_per_address' | 'blocked_address' | 'early_drop' | 'evicted' | 'idle_per_user';

export const DEFAULT_PORTAL_LIMITS: PortalLimits = {
  maxConnections: 2000,
  earlyDropStart: 100,
  earlyDropRate: 30,
  maxUnauthenticated: 200,
  maxUnauthenticatedPerAddress: 10,
  failuresPerAddressPerMinute: 20,
  blockS: 300,
  maxAuthAttempts: 6,
  authTimeoutS: 20,
  idleTimeoutS: 600,
  maxConnectionsPerUser: 20,
};

/**
 * The source an address is limited as: an IPv4 address, or the /64 of an IPv6 one (one host or one
 * customer is handed a whole /64, so per-address limits on IPv6 would be limits on nothing).
 * Node's `net` validates; the expansion is the few lines RFC 4291's text form needs.
 */
export function addressSource(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const bare = address.replace(/%.*$/, '');
  if (!net.isIPv6(bare)) return address;
  const [head = '', tail] = bare.split('::');
  const groups = (s: string) => (s ? s.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : []);
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/** One admitted connection, from its socket to its close. */
export class Admission {
  authenticated = false;
  closed = false;
  constructor(readonly source: string, readonly admittedAt: number, readonly evict: () => void) {}
}

/**
 * What the portal lets in (docs/threat-model.md), in the spirit of sshd's MaxStartups, MaxAuthTries and
 * LoginGraceTime plus fail2ban: a cap on connections; on those still authenticating, shared fairly
 * between sources (random early drop, then eviction from the source holding the most, so that a
 * source with none always gets one); on failed authentications per source (rate-limiter-flexible's
 * in-memory limiter, with a block once passed); and on authenticated connections per user.
 * All of it lives in the portal's memory: nothing an unauthenticated client does reaches the database
 * beyond the reads that check its credentials.
 */
export class PortalGuard {
  private open = 0;
  /** Connections turned away since start, by the limit that did it (for /metrics). */
  readonly refusals: Record<PortalRefusal, number> = {
    connections: 0, authenticating: 0, authenticating_per_address: 0, blocked_address: 0, early_drop: 0, evicted: 0, idle_per_user: 0,
  };
  /** Connections still authenticating by source, oldest first (a Set keeps insertion order). */
  private readonly unauthenticated = new Map<string, Set<Admission>>();
  private unauthenticatedTotal = 0;
  private readonly failures: RateLimiterMemory;
  private readonly blockedUntil = new Map<string, number>();
  /** Each user's idle authenticated connections, longest idle first (a Map keeps insertion order). */
  private readonly idleByUser = new Map<number, Map<object, () => void>>();

  constructor(readonly limits: PortalLimits, private readonly random: () => number = Math.random) {
    const { earlyDropStart, earlyDropRate, maxUnauthenticated } = limits;
    if (!(earlyDropStart > 0 && earlyDropStart <= maxUnauthenticated && earlyDropRate >= 0 && earlyDropRate <= 100)) {
      throw new Error(
        `The portal's start:rate:full (${earlyDropStart}:${earlyDropRate}:${maxUnauthenticated}) needs 0 < start <= full and a rate from 0 to 100, ` +
          'as sshd\'s MaxStartups; for example ESSH_PORTAL_MAX_STARTUPS=100:30:200.',
      );
    }
    this.failures = new RateLimiterMemory({ points: limits.failuresPerAddressPerMinute, duration: 60, blockDuration: limits.blockS });
  }

  get openConnections(): number {
    return this.open;
  }

  get unauthenticatedConnections(): number {
    return this.unauthenticatedTotal;
  }

  /**
   * Whether a new connection from `address` may go on; if so, the caller reports its authentication
   * and its end, and `evict` ends it should a newcomer need its slot before it has authenticated.
   */
  admit(address: string, evict: () => void): Admission | null {
    const source = addressSource(address);
    const refusal = this.refusalFor(source);
    if (refusal) {
      this.refusals[refusal]++;
      return null;
    }
    const admission = new Admission(source, Date.now(), evict);
    this.open++;
    this.unauthenticatedTotal++;
    const held = this.unauthenticated.get(source) ?? new Set();
    held.add(admission);
    this.unauthenticated.set(source, held);
    return admission;
  }

  private refusalFor(source: string): PortalRefusal | null {
    const { limits } = this;
    if (this.open >= limits.maxConnections) return 'connections';
    if (this.isBlocked(source)) return 'blocked_address';
    const held = this.unauthenticated.get(source)?.size ?? 0;
    if (held >= limits.maxUnauthenticatedPerAddress) return 'authenticating_per_address';
    const total = this.unauthenticatedTotal;
    if (total >= limits.maxUnauthenticated) return this.makeRoomFor(held) ? null : 'authenticating';
    if (total >= limits.earlyDropStart && held > 0) {
      const span = Math.max(1, limits.maxUnauthenticated - limits.earlyDropStart);
      const p = limits.earlyDropRate / 100 + (1 - limits.earlyDropRate / 100) * ((total - limits.earlyDropStart) / span);
      if (this.random() < p) return 'early_drop';
    }
    return null;
  }

  /** Closes the oldest authenticating connection of the source holding the most, if it holds more than one beyond `held`. */
  private makeRoomFor(held: number): boolean {
    let top: Set<Admission> | undefined;
    for (const set of this.unauthenticated.values()) if (!top || set.size > top.size) top = set;
    if (!top || top.size <= held + 1) return false;
    const oldest = top.values().next().value!;
    this.refusals.evicted++;
    this.closed(oldest);
    oldest.evict();
    return true;
  }

  /** The connection authenticated: it no longer counts as one still trying. */
  authenticated(admission: Admission) {
    if (admission.authenticated || admission.closed) return;
    admission.authenticated = true;
    this.release(admission);
  }

  closed(admission: Admission) {
    if (admission.closed) return;
    admission.closed = true;
    this.open--;
    if (!admission.authenticated) this.release(admission);
  }

  /** Records a failed attempt (or a key offered) from `address`; false once its source is shut out. */
  async failed(address: string): Promise<boolean> {
    const source = addressSource(address);
    try {
      await this.failures.consume(source);
      return true;
    } catch {
      this.blockedUntil.set(source, Date.now() + this.limits.blockS * 1000);
      return false;
    }
  }

  /** Gives back what the keys a connection offered cost its source, once one of them logged it in. */
  async forgive(address: string, points: number) {
    if (points > 0) await this.failures.reward(addressSource(address), points);
  }

  isBlocked(addressOrSource: string): boolean {
    const source = addressSource(addressOrSource);
    const until = this.blockedUntil.get(source);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.blockedUntil.delete(source);
    return false;
  }

  /**
   * Notes that a connection of `userId` has no channel open. Past the user's cap, the user's longest-idle
   * connection is closed through its `close` (a ControlMaster left behind, most often); a newcomer is
   * never the one closed, since it is about to open its channel.
   */
  idle(userId: number, connection: object, close: () => void) {
    let idle = this.idleByUser.get(userId);
    if (!idle) this.idleByUser.set(userId, (idle = new Map()));
    idle.delete(connection);
    idle.set(connection, close);
    while (idle.size > this.limits.maxConnectionsPerUser) {
      const [oldest, closeOldest] = idle.entries().next().value!;
      idle.delete(oldest);
      this.refusals.idle_per_user++;
      closeOldest();
    }
  }

  /** The connection has a channel open, or is gone: it no longer counts as idle. */
  busy(userId: number, connection: object) {
    const idle = this.idleByUser.get(userId);
    idle?.delete(connection);
    if (idle?.size === 0) this.idleByUser.delete(userId);
  }

  private release(admission: Admission) {
    this.unauthenticatedTotal--;
    const held = this.unauthenticated.get(admission.source);
    held?.delete(admission);
    if (held && held.size === 0) this.unauthenticated.delete(admission.source);
  }
}
