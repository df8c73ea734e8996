import { RateLimiterMemory } from 'rate-limiter-flexible';

export interface PortalLimits {
  /** Open connections, authenticated or not. */
  maxConnections: number;
  /** Connections still authenticating, in all and from one address. */
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  /** Failed authentications from one address per minute before it is shut out for `blockS`. */
  failuresPerAddressPerMinute: number;
  blockS: number;
  /** Authentication attempts one connection may make (OpenSSH's MaxAuthTries). */
  maxAuthAttempts: number;
  /** Time a connection has to authenticate. */
  authTimeoutS: number;
}

/** Which limit turned a connection away. */
export type PortalRefusal = 'connections' | 'authenticating' | 'authenticating_per_address' | 'blocked_address';

export const DEFAULT_PORTAL_LIMITS: PortalLimits = {
  maxConnections: 2000,
  maxUnauthenticated: 200,
  maxUnauthenticatedPerAddress: 10,
  failuresPerAddressPerMinute: 20,
  blockS: 300,
  maxAuthAttempts: 6,
  authTimeoutS: 20,
};

/**
 * What the portal lets in before anyone has authenticated (docs/threat-model.md), in the spirit of
 * sshd's MaxStartups, MaxAuthTries and LoginGraceTime plus fail2ban: a cap on connections, on those
 * still authenticating (in all and per address, so one address cannot take every slot), and on failed
 * authentications per address (rate-limiter-flexible's in-memory limiter, with a block once passed).
 * All of it lives in the portal's memory: nothing an unauthenticated client does reaches the database
 * beyond the reads that check its credentials.
 */
export class PortalGuard {
  private open = 0;
  /** Connections turned away since start, by the limit that did it (for /metrics). */
  readonly refusals: Record<PortalRefusal, number> = { connections: 0, authenticating: 0, authenticating_per_address: 0, blocked_address: 0 };
  private readonly unauthenticated = new Map<string, number>();
  private unauthenticatedTotal = 0;
  private readonly failures: RateLimiterMemory;
  private readonly blockedUntil = new Map<string, number>();

  constructor(readonly limits: PortalLimits) {
    this.failures = new RateLimiterMemory({ points: limits.failuresPerAddressPerMinute, duration: 60, blockDuration: limits.blockS });
  }

  get openConnections(): number {
    return this.open;
  }

  get unauthenticatedConnections(): number {
    return this.unauthenticatedTotal;
  }

  /** Whether a new connection from `address` may go on; if so, the caller reports its end with `closed`. */
  admit(address: string): boolean {
    const refusal = this.refusalFor(address);
    if (refusal) {
      this.refusals[refusal]++;
      return false;
    }
    this.open++;
    this.unauthenticatedTotal++;
    this.unauthenticated.set(address, (this.unauthenticated.get(address) ?? 0) + 1);
    return true;
  }

  private refusalFor(address: string): PortalRefusal | null {
    const { limits } = this;
    if (this.open >= limits.maxConnections) return 'connections';
    if (this.unauthenticatedTotal >= limits.maxUnauthenticated) return 'authenticating';
    if ((this.unauthenticated.get(address) ?? 0) >= limits.maxUnauthenticatedPerAddress) return 'authenticating_per_address';
    if (this.isBlocked(address)) return 'blocked_address';
    return null;
  }

  /** The connection authenticated: it no longer counts as one still trying. */
  authenticated(address: string) {
    this.release(address);
  }

  closed(address: string, wasAuthenticated: boolean) {
    this.open--;
    if (!wasAuthenticated) this.release(address);
  }

  /** Records a failed attempt; false once the address is shut out. */
  async failed(address: string): Promise<boolean> {
    try {
      await this.failures.consume(address);
      return true;
    } catch {
      this.blockedUntil.set(address, Date.now() + this.limits.blockS * 1000);
      return false;
    }
  }

  isBlocked(address: string): boolean {
    const until = this.blockedUntil.get(address);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.blockedUntil.delete(address);
    return false;
  }

  private release(address: string) {
    this.unauthenticatedTotal--;
    const n = (this.unauthenticated.get(address) ?? 1) - 1;
    if (n <= 0) this.unauthenticated.delete(address);
    else this.unauthenticated.set(address, n);
  }
}
