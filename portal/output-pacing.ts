import { performance } from 'node:perf_hooks';
import type { OutputPace } from '../journal/journaled-output.js';

/**
 * Issue 20's fairness: a keystroke's echo crosses four processes (the portal, dockerd, the container's
 * shim and its shell) that all wait for a CPU while other sessions print as fast as they can, so the
 * portal yielding its event loop is not enough. When a client types, this portal stops reading the
 * sessions that print in bulk until the keystroke's session answers (its echo) or `interactiveMs` has
 * passed: their output waits in Docker (back-pressure down to the program), the engine and the
 * OpenSSH clients stop copying, and the echo finds the CPUs free.
 */
export interface OutputPacingLimits {
  /** How long bulk output holds at most after a keystroke (0: never: the portal copies in arrival order). */
  interactiveMs: number;
  /** Once the typing session's output (its echo) is passed, bulk output goes on after this (its client reads it meanwhile). */
  afterAnswerMs: number;
  /** A stream that passed more than `bulkBytes` within `spanMs` is bulk output; less (an echo, a prompt, a page of `ls`) never waits. */
  bulkBytes: number;
  /** A client that sent more than `typingBytes` within `spanMs` is uploading, not typing: its input holds nobody. */
  typingBytes: number;
  spanMs: number;
  /**
   * Bulk output holds at most this share of any stretch of time, plus `holdBurstMs`: clients typing
   * without end (or a script sending a byte at a time) cost the printing sessions at most that share,
   * never a stall.
   */
  holdShare: number;
  holdBurstMs: number;
}

export const DEFAULT_OUTPUT_PACING: OutputPacingLimits = {
  interactiveMs: 50,
  afterAnswerMs: 3,
  bulkBytes: 256 * 1024,
  typingBytes: 4096,
  spanMs: 100,
  holdShare: 0.5,
  holdBurstMs: 60,
};

/** One per portal process: the interactive windows that the sessions' keystrokes open, shared by all its streams. */
export class OutputPacing {
  private holdUntil = 0;
  /** Hold time (ms) still to give: a token bucket refilled at `holdShare` ms per ms, at most `holdBurstMs`. */
  private holdLeft: number;
  private refilledAt: number;
  /** The streams whose client typed in the current window and that have not answered yet. */
  private readonly unanswered = new Set<PacedStream>();
  /** Bulk streams waiting for the window to close. */
  private readonly waiting = new Set<() => void>();
  private timer?: NodeJS.Timeout;
  private timerAt = 0;
  /** Windows opened and the hold time they took from the bucket, for diagnostics. */
  windows = 0;
  windowsMs = 0;

  constructor(
    readonly limits: OutputPacingLimits = DEFAULT_OUTPUT_PACING,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.holdLeft = limits.holdBurstMs;
    this.refilledAt = now();
  }

  get enabled(): boolean {
    return this.limits.interactiveMs > 0;
  }

  /** The pace of one session's output and input (one attachment). */
  stream(): PacedStream {
    return new PacedStream(this, this.limits, this.now);
  }

  /** `stream`'s client typed: bulk output holds until it answers, at most `interactiveMs` from now, as far as the bucket allows. */
  typed(stream: PacedStream): void {
    const now = this.now();
    if (now >= this.holdUntil) this.unanswered.clear();
    if (this.extendHold(now, now + this.limits.interactiveMs)) this.windows++;
    if (now < this.holdUntil) this.unanswered.add(stream);
  }

  /** Holds bulk output until `until`, as far as the bucket allows; whether it held any longer. */
  private extendHold(now: number, until: number): boolean {
    this.refill(now);
    const from = Math.max(now, this.holdUntil);
    const grant = Math.min(until - from, this.holdLeft);
    if (grant <= 0) return false;
    this.holdLeft -= grant;
    this.holdUntil = from + grant;
    this.windowsMs += grant;
    return true;
  }

  /** `stream` passed output while it was not printing in bulk: the echo of its keystroke is on its way. */
  answered(stream: PacedStream): void {
    if (!this.unanswered.delete(stream) || this.unanswered.size > 0) return;
    const now = this.now();
    const end = now + this.limits.afterAnswerMs;
    if (end >= this.holdUntil) return;
    // What the window no longer needs goes back to the bucket.
    this.refill(now);
    this.holdLeft = Math.min(this.limits.holdBurstMs, this.holdLeft + (this.holdUntil - end));
    this.holdUntil = end;
    this.wakeAt(end);
  }

  /** Whether bulk output waits now; if so `go` is called once the window closes (then ask again). */
  hold(go: () => void): number {
    const left = this.holdUntil - this.now();
    if (left <= 0) return 0;
    this.waiting.add(go);
    this.wakeAt(this.holdUntil);
    return left;
  }

  private refill(now: number) {
    this.holdLeft = Math.min(this.limits.holdBurstMs, this.holdLeft + (now - this.refilledAt) * this.limits.holdShare);
    this.refilledAt = now;
  }

  /** One timer for all the waiting streams, set for when the window closes (sooner when it was cut short). */
  private wakeAt(at: number) {
    if (this.timer && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = this.now();
      if (now < this.holdUntil) return this.wakeAt(this.holdUntil);
      // The streams waited until now, not until the window's end: a timer fires a millisecond late or
      // more, and many short windows would otherwise hold bulk output far beyond its share.
      this.refill(now);
      this.holdLeft -= now - this.holdUntil;
      this.holdUntil = now;
      const waiting = [...this.waiting];
      this.waiting.clear();
      for (const go of waiting) go();
    }, Math.max(0, at - this.now()));
  }
}

/** Bytes within roughly the last `spanMs`: this span's and the share of the previous one still inside it. */
class RecentBytes {
  private spanStart = -Infinity;
  private current = 0;
  private previous = 0;

  constructor(private readonly spanMs: number) {}

  add(bytes: number, now: number): number {
    this.roll(now);
    this.current += bytes;
    return this.total(now);
  }

  total(now: number): number {
    this.roll(now);
    return this.current + this.previous * Math.max(0, 1 - (now - this.spanStart) / this.spanMs);
  }

  private roll(now: number) {
    const elapsed = now - this.spanStart;
    if (elapsed < this.spanMs) return;
    const next = elapsed < 2 * this.spanMs;
    this.previous = next ? this.current : 0;
    this.current = 0;
    this.spanStart = next ? this.spanStart + this.spanMs : now;
  }
}

/** One attachment's output (is it bulk?) and input (is it typing?). */
export class PacedStream implements OutputPace {
  private readonly output: RecentBytes;
  private readonly input: RecentBytes;
  /** How often and how long (ms, about) this stream's output waited for an interactive window to close. */
  holds = 0;
  heldMs = 0;

  constructor(
    private readonly pacing: OutputPacing,
    private readonly limits: OutputPacingLimits,
    private readonly now: () => number,
  ) {
    this.output = new RecentBytes(limits.spanMs);
    this.input = new RecentBytes(limits.spanMs);
  }

  /** The client sent input: a keystroke opens an interactive window, unless this stream prints in bulk itself or uploads. */
  received(bytes: number): void {
    if (!this.pacing.enabled) return;
    const now = this.now();
    if (this.input.add(bytes, now) > this.limits.typingBytes || this.isBulk(now)) return;
    this.pacing.typed(this);
  }

  passed(bytes: number): void {
    if (!this.pacing.enabled) return;
    const now = this.now();
    if (this.output.add(bytes, now) <= this.limits.bulkBytes) this.pacing.answered(this);
  }

  wait(go: () => void): boolean {
    if (!this.pacing.enabled || !this.isBulk(this.now())) return false;
    const started = this.now();
    const left = this.pacing.hold(() => {
      this.heldMs += this.now() - started;
      go();
    });
    if (left > 0) this.holds++;
    return left > 0;
  }

  private isBulk(now: number): boolean {
    return this.output.total(now) > this.limits.bulkBytes;
  }
}
