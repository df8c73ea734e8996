import type { Db } from '../lib/db.js';

/** A session's idle timeout and whose it is, as its end message and its client's warning say. */
export interface IdleLimit {
  seconds: number;
  /** "the idle timeout of account acme", "… of stack local", or "… of stack local and account acme". */
  whose: string;
}

/**
 * The idle timeout of a session: the smaller of its stack's and its account's that are set (null or 0:
 * none), read when a client attaches. Null: none applies, which is the default.
 */
export async function idleLimitOf(db: Db, sessionId: number): Promise<IdleLimit | null> {
  const row = await db.selectFrom('operations as o')
    .innerJoin('accounts as a', 'a.id', 'o.account_id')
    .leftJoin('stacks as s', 's.name', 'o.stack')
    .select(['o.stack', 'a.handle as account', 's.idle_timeout_s as stack_s', 'a.idle_timeout_s as account_s'])
    .where('o.id', '=', sessionId).executeTakeFirst();
  if (!row) return null;
  const set = [
    { seconds: Number(row.stack_s ?? 0), of: `stack ${row.stack}` },
    { seconds: Number(row.account_s ?? 0), of: `account ${row.account}` },
  ].filter((x) => x.seconds > 0);
  if (set.length === 0) return null;
  const seconds = Math.min(...set.map((x) => x.seconds));
  const of = set.filter((x) => x.seconds === seconds).map((x) => x.of).join(' and ');
  return { seconds, whose: `the idle timeout of ${of}` };
}

/**
 * How long before the end the client is warned: a minute, or half the timeout when that is under two
 * minutes (a minute's warning of a 90 s timeout would come after 30 s of quiet, most of it not idle).
 */
export const warnBeforeMs = (timeoutS: number) => (timeoutS < 120 ? (timeoutS * 1000) / 2 : 60_000);

/** "45 s", "1 min", "5 min 30 s". */
export function duration(s: number): string {
  const min = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  if (min === 0) return `${sec} s`;
  return sec ? `${min} min ${sec} s` : `${min} min`;
}

/** The end message of a session its idle timeout ended (the record's, the drains' and the client's). */
export const idleEndMessage = (limit: IdleLimit) => `no input or output for ${duration(limit.seconds)} (${limit.whose})`;

/**
 * Ends an attached session after `limit` without input from its client and without output from its
 * program, warning the client first. `touch()` is called on every chunk either way, so it only notes the
 * time; the one timer wakes when the warning or the end would be due and looks at that time then.
 */
export class IdleTimer {
  private lastActivity = Date.now();
  /** The activity the warning was given for: activity since then makes it due again. */
  private warnedFor = -1;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly limit: IdleLimit,
    private readonly on: {
      /** The line that warns the client, a minute (or half the timeout) before the end. */
      warn: (line: string) => void;
      /** The timeout passed: ask the workflow to end the session. Asked again while nothing happens, should it not have ended. */
      idle: (message: string) => void;
    },
  ) {
    this.check();
  }

  touch() {
    this.lastActivity = Date.now();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private check() {
    if (this.stopped) return;
    const timeoutMs = this.limit.seconds * 1000;
    const warnAt = timeoutMs - warnBeforeMs(this.limit.seconds);
    const now = Date.now();
    const quietMs = now - this.lastActivity;
    let nextIn: number;
    if (quietMs >= timeoutMs) {
      this.on.idle(idleEndMessage(this.limit));
      // Ended by the workflow, the attachment stops this timer; otherwise (a signal that did not get
      // through) the next look asks again.
      nextIn = Math.min(timeoutMs, 30_000);
    } else if (quietMs >= warnAt) {
      if (this.warnedFor !== this.lastActivity) {
        this.warnedFor = this.lastActivity;
        const left = Math.max(1, Math.round((timeoutMs - quietMs) / 1000));
        this.on.warn(`essh: this session will end for inactivity in ${duration(left)} (${this.limit.whose} is ${duration(this.limit.seconds)}) unless you type something.`);
      }
      nextIn = timeoutMs - quietMs;
    } else {
      nextIn = warnAt - quietMs;
    }
    this.timer = setTimeout(() => this.check(), Math.max(nextIn, 50));
    this.timer.unref?.();
  }
}
