import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { PeriodicPass } from '../lib/periodic.js';

/** Deleted per statement, so that a large purge never holds the database's write lock for long. */
const DELETE_CHUNK = 5000;

/**
 * Deletes the captured output (the events behind drains and recordings) of sessions that ended more
 * than `retentionS` ago. Events a drain of the account has not yet delivered stay until it has: a
 * drain that is down when the retention runs out loses nothing. 0 keeps everything.
 */
export class EventRetention {
  private readonly passes: PeriodicPass<number>;

  constructor(private readonly deps: { db: Db; retentionS: number; intervalS: number; log: Logger }) {
    this.passes = new PeriodicPass(() => this.pass(), { intervalS: deps.intervalS, log: deps.log, what: 'purging expired session output' });
  }

  start() {
    if (this.deps.retentionS > 0) this.passes.start();
  }

  stop() {
    return this.passes.stop();
  }

  private async pass(): Promise<number> {
    const { db, retentionS, log } = this.deps;
    if (retentionS <= 0) return 0;
    const cutoff = new Date(Date.now() - retentionS * 1000).toISOString();
    const expired = await db.selectFrom('operations as o').select('o.id')
      .where('o.state', '=', 'ended').where('o.ended_at', '<', cutoff)
      .where(({ or, exists, selectFrom }) => or([
        exists(selectFrom('session_events as e').select('e.id').whereRef('e.operation_id', '=', 'o.id')),
        exists(selectFrom('session_terminal_sizes as z').select('z.id').whereRef('z.operation_id', '=', 'o.id')),
      ]))
      .execute();
    let deleted = 0;
    for (const { id } of expired) {
      for (;;) {
        const chunk = db.selectFrom('session_events as e').select('e.id')
          .where('e.operation_id', '=', id)
          // Not past the cursor of a drain that takes session output: that drain still has to get it.
          .where(({ not, exists, selectFrom }) => not(exists(selectFrom('log_drains as d').select('d.id')
            .whereRef('d.account_id', '=', 'e.account_id')
            .where('d.drain_ephemeral_sessions', '=', 1)
            .whereRef('d.cursor', '<', 'e.id'))))
          .limit(DELETE_CHUNK);
        const r = await db.deleteFrom('session_events').where('id', 'in', chunk).executeTakeFirst();
        const n = Number(r.numDeletedRows);
        deleted += n;
        if (n < DELETE_CHUNK) break;
      }
      // The terminal sizes belong to the recording: they go with its last event.
      const left = await db.selectFrom('session_events').select('id').where('operation_id', '=', id).limit(1).executeTakeFirst();
      if (!left) await db.deleteFrom('session_terminal_sizes').where('operation_id', '=', id).execute();
    }
    if (deleted) log.info({ deleted, sessions: expired.length }, 'purged session output past its retention');
    return deleted;
  }
}
