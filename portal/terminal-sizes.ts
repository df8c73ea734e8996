import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { Logger } from '../lib/log.js';

/** A window being dragged sends dozens of sizes a second; the recording needs the ones that stayed. */
const THROTTLE_MS = 100;
/** Past this many sizes in one attachment the rest are not recorded (a client sending sizes in a loop). */
const MAX_SIZES = 10_000;

/**
 * Records a TTY session's terminal size when the client attaches and after each resize, so that its
 * recording replays in a terminal of the size the user had (the asciicast header and "r" events).
 * At most one size per THROTTLE_MS, always including the last of a burst; writes go in order, and a
 * failed write costs the recording a size, never the terminal anything.
 */
export class TerminalSizeRecorder {
  private pending: { cols: number; rows: number } | null = null;
  private last = '';
  private count = 0;
  private timer?: NodeJS.Timeout;
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly db: Db, private readonly operationId: number, private readonly log: Logger) {}

  record(size: { cols: number; rows: number }) {
    this.pending = { cols: size.cols, rows: size.rows };
    if (this.timer) return;
    this.flush();
    this.armTrailing();
  }

  /** Writes a size still held back by the throttle; resolves once every write has been tried. */
  close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
    return this.writes;
  }

  private armTrailing() {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.pending) return;
      this.flush();
      this.armTrailing();
    }, THROTTLE_MS);
  }

  private flush() {
    const size = this.pending;
    this.pending = null;
    if (!size || !(size.cols > 0 && size.rows > 0)) return;
    const key = `${size.cols}x${size.rows}`;
    if (key === this.last || this.count >= MAX_SIZES) return;
    this.last = key;
    this.count++;
    const row = { operation_id: this.operationId, time: nowIso(), cols: size.cols, rows: size.rows };
    this.writes = this.writes.then(() =>
      this.db.insertInto('session_terminal_sizes').values(row).execute().then(
        () => undefined,
        (err) => this.log.warn({ err: (err as Error).message, session: this.operationId }, 'recording a terminal size failed'),
      ),
    );
  }
}
