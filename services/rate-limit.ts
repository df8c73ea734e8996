import { sql } from 'kysely';
import type { Db } from '../lib/db.js';
import type { Principal } from './auth.js';
import { ApiError } from './errors.js';

const WINDOW_S = 60;

/**
 * Caps how often one user may do something per minute: create sessions (a leaked or looping client
 * would churn containers), download recordings (each one reads a whole journal on its host). The
 * counter is a row in the database, taken in one atomic upsert, so every API process (and the SSH
 * portal, which creates sessions for `<app>@host` logins) shares it: a user spreading requests over
 * several API processes gets no more. Fixed one-minute windows: at a window's edge a user may briefly
 * get up to twice the rate, never more. (rate-limiter-flexible, used for the portal's in-process
 * limits, has SQLite and PostgreSQL stores, but they take the raw driver client, which Node 24's
 * built-in SQLite does not offer: see lib/db.ts.)
 */
export class PerUserRateLimiter {
  constructor(
    private readonly db: Db,
    private readonly opts: {
      /** The counter's name in `rate_limits` (with the user's id). */
      action: string;
      /** 0 turns the limit off. */
      perMinute: number;
      /** The refusal's first sentence, e.g. "Too many sessions created by ann@example.com: at most 3 a minute." */
      refusal: (who: string, perMinute: number) => string;
    },
  ) {}

  async take(principal: Principal): Promise<void> {
    const { perMinute } = this.opts;
    if (perMinute <= 0) return;
    const now = Math.floor(Date.now() / 1000);
    const window = now - (now % WINDOW_S);
    const key = `${this.opts.action}:user:${principal.id}`;
    const row = await this.db.insertInto('rate_limits').values({ key, window_start: window, taken: 1 })
      .onConflict((oc) => oc.column('key').doUpdateSet({
        taken: sql`case when rate_limits.window_start = ${window} then rate_limits.taken + 1 else 1 end`,
        window_start: window,
      }))
      .returning('taken').executeTakeFirstOrThrow();
    if (Number(row.taken) <= perMinute) return;
    const retryAfterS = Math.max(1, window + WINDOW_S - now);
    throw new ApiError(429, 'rate_limited', `${this.opts.refusal(principal.email, perMinute)} Try again in ${retryAfterS} s.`, { retry_after_s: retryAfterS });
  }
}
