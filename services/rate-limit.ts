import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { Principal } from './auth.js';
import { ApiError } from './errors.js';

/**
 * Caps how many sessions one API token (or, over SSH, one user) may create per minute, so that a
 * leaked or looping client cannot churn containers. Keyed by the token's row id, never by its value.
 * The counters live in this process: with several API processes the cap applies per process.
 */
export class SessionCreateRateLimiter {
  private readonly limiter?: RateLimiterMemory;

  constructor(private readonly perMinute: number) {
    if (perMinute > 0) this.limiter = new RateLimiterMemory({ points: perMinute, duration: 60 });
  }

  async take(principal: Principal): Promise<void> {
    if (!this.limiter) return;
    const key = principal.tokenId !== undefined ? `token:${principal.tokenId}` : `user:${principal.id}`;
    try {
      await this.limiter.consume(key);
    } catch (res) {
      if (!(res instanceof RateLimiterRes)) throw res;
      const retryAfterS = Math.max(1, Math.ceil(res.msBeforeNext / 1000));
      throw new ApiError(
        429,
        'rate_limited',
        `Too many sessions created with these credentials: at most ${this.perMinute} a minute. Try again in ${retryAfterS} s.`,
        { retry_after_s: retryAfterS },
      );
    }
  }
}
