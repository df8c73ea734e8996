import type { Db } from '../lib/db.js';
import { containerKnownWithin, onRecordChanged, recordChangedWithin } from '../domain/record-news.js';
import { printable } from '../lib/printable.js';

export type SessionRow = NonNullable<Awaited<ReturnType<typeof readSession>>>;

const COLUMNS = ['id', 'state', 'container_id', 'command', 'app_id', 'end_reason', 'end_message', 'ended_by', 'exit_code', 'detached'] as const;

function readSession(db: Db, id: number) {
  return db.selectFrom('operations').select(COLUMNS).where('id', '=', id).executeTakeFirst();
}

/** How often the records of running sessions are read for news from other processes. */
const RUNNING_POLL_MS = 1000;
/** Ids per query (SQLite allows 32 766 parameters; PostgreSQL 65 535). */
const IDS_PER_QUERY = 1000;

/**
 * The records of every session this process's portal serves, read in one query a second rather than one
 * query per session a second (500 attached clients were 500 queries a second, the portal's largest cost:
 * docs/scale.md), and at once for a session whose record this process itself changed.
 */
class RunningSessionsPoller {
  private readonly watchers = new Map<number, Set<(row: SessionRow | undefined) => void>>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly db: Db) {}

  /** Calls `onRow` with the session's record at each read until the returned function is called. */
  watch(id: number, onRow: (row: SessionRow | undefined) => void): () => void {
    let set = this.watchers.get(id);
    if (!set) this.watchers.set(id, (set = new Set()));
    set.add(onRow);
    const offNews = onRecordChanged(id, () => void this.readOne(id));
    this.timer ??= setTimeout(() => void this.pass(), RUNNING_POLL_MS);
    return () => {
      offNews();
      set.delete(onRow);
      if (set.size === 0) this.watchers.delete(id);
    };
  }

  private deliver(id: number, row: SessionRow | undefined) {
    for (const onRow of [...(this.watchers.get(id) ?? [])]) onRow(row);
  }

  private async readOne(id: number) {
    const row = await readSession(this.db, id).catch(() => null);
    if (row !== null) this.deliver(id, row);
  }

  private async pass() {
    try {
      const ids = [...this.watchers.keys()];
      for (let i = 0; i < ids.length; i += IDS_PER_QUERY) {
        const chunk = ids.slice(i, i + IDS_PER_QUERY);
        const rows = await this.db.selectFrom('operations').select(COLUMNS).where('id', 'in', chunk).execute().catch(() => null);
        // A failed read is tried again at the next pass, as each watcher's own read used to be.
        if (rows === null) continue;
        const byId = new Map(rows.map((r) => [Number(r.id), r]));
        for (const id of chunk) this.deliver(id, byId.get(id));
      }
    } finally {
      this.timer = this.watchers.size > 0 ? setTimeout(() => void this.pass(), RUNNING_POLL_MS) : undefined;
    }
  }
}

const pollers = new WeakMap<Db, RunningSessionsPoller>();
function runningPoller(db: Db): RunningSessionsPoller {
  let p = pollers.get(db);
  if (!p) pollers.set(db, (p = new RunningSessionsPoller(db)));
  return p;
}

export const isOver = (state: string) => state === 'ending' || state === 'ended';

export const ALREADY_ATTACHED = (id: number) => `essh: session ${id} already has a client attached; only one connection at a time is allowed.`;

/** How long a client waits for a session that is still provisioning. */
const READY_TIMEOUT_MS = 5 * 60_000;

/**
 * Everything the portal learns about a session's record, in one place: its container once it has one,
 * its end when it ends for a reason other than its program (a terminate, expiry, a lost container),
 * and the moment it is `ending` after the program exited. It reads the record, waking early on news
 * from this process (the host's own provisioning and record-keeping activities), and otherwise at a
 * pace that suits the wait: every 15 ms while a user waits for a prompt or an exit status, every
 * second while the session simply runs (in one query for all the sessions this process serves).
 */
export class SessionWatch {
  private stopped = false;
  private unwatch?: () => void;

  constructor(private readonly db: Db, readonly sessionId: number) {}

  read(): Promise<SessionRow | undefined> {
    return readSession(this.db, this.sessionId);
  }

  stop() {
    this.stopped = true;
    this.unwatch?.();
  }

  /**
   * The session's container, or the sentence that says why there is none to attach to. `onSlow` is
   * called once if the wait passes 300 ms (a progress line). Null when the watch was stopped.
   */
  async untilContainer(
    onSlow?: () => void,
    /**
     * Asked when the session is `active` (a client attached, as far as the record knows): whether this
     * client may attach all the same, the one that made it active being gone with its portal.
     */
    mayReattach?: () => Promise<true | string>,
  ): Promise<{ row: SessionRow; containerId: string } | { refused: string } | null> {
    const id = this.sessionId;
    const started = Date.now();
    let slow = false;
    for (;;) {
      if (this.stopped) return null;
      const row = await this.read();
      if (!row) return { refused: `essh: session ${id} was not found.` };
      if (isOver(row.state)) return { refused: endNotice(row) };
      // Its program already runs with no client; a second one started by a client would run it twice.
      if (Number(row.detached) === 1) return { refused: `essh: session ${id} is a detached job: no client attaches to it; follow its output with essh logs -f ${id}.` };
      if (row.state === 'active') {
        const answer = row.container_id && mayReattach ? await mayReattach() : ALREADY_ATTACHED(id);
        return answer === true ? { row, containerId: row.container_id! } : { refused: answer };
      }
      const announced = await containerKnownWithin(id, 0);
      const containerId = row.container_id ?? announced;
      if (containerId) return { row, containerId };
      const waited = Date.now() - started;
      if (!slow && waited > 300) {
        slow = true;
        onSlow?.();
      }
      if (waited > READY_TIMEOUT_MS) return { refused: `essh: session ${id} is still not ready after ${READY_TIMEOUT_MS / 60_000} minutes; try again later.` };
      // The host's provisioning in this process announces the container the moment it has one.
      await containerKnownWithin(id, waited < 3000 ? 15 : 100);
    }
  }

  /**
   * Resolves with the record once the session has ended for a reason other than its own program. Once
   * the watch is stopped it never resolves (the caller has its answer from elsewhere).
   */
  untilEndedElsewhere(): Promise<SessionRow> {
    return new Promise((resolve) => {
      if (this.stopped) return;
      const unwatch = runningPoller(this.db).watch(this.sessionId, (row) => {
        if (row && isOver(row.state) && row.end_reason && row.end_reason !== 'exit') {
          unwatch();
          resolve(row);
        }
      });
      this.unwatch = unwatch;
    });
  }

  /**
   * After the program exited: the record once the session is `ending` (its plan slot is free), or
   * after `timeoutMs` whatever it says, so that a client never waits on an unreachable workflow.
   */
  async untilEnding(timeoutMs: number): Promise<SessionRow | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const row = await this.read().catch(() => undefined);
      if ((row && isOver(row.state)) || Date.now() > deadline || this.stopped) return row;
      await recordChangedWithin(this.sessionId, 15);
    }
  }
}

/** The one line a user sees when the session ends for a reason other than its program exiting. */
export function endNotice(row: Pick<SessionRow, 'id' | 'end_reason' | 'end_message' | 'ended_by'>): string {
  const id = Number(row.id);
  // The reason was written by whoever ended it (an account admin, say): shown, never obeyed, by the
  // user's terminal.
  const why = row.end_message ? `: ${printable(row.end_message)}` : '';
  switch (row.end_reason) {
    case 'terminated':
      return `essh: session ${id} terminated by ${row.ended_by ?? 'an operator'}${why}`;
    case 'expired':
      return `essh: session ${id} expired${why}`;
    case 'exit':
      return `essh: session ${id} has ended (its program exited)`;
    case 'idle':
      return `essh: session ${id} ended for inactivity${why}`;
    default:
      return `essh: session ${id} ended (${row.end_reason ?? 'unknown reason'})${why}`;
  }
}
