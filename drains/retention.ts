import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { PeriodicPass } from '../lib/periodic.js';
import { deleteJournal } from '../journal/rows.js';

/**
 * Deletes, on its host, the journal (the drains' queue and the recording) of each session that ended
 * more than `retentionS` ago, except while a drain of its account has not delivered it all: a drain
 * that is down or paused when the retention runs out loses nothing. The session's `session_journals`
 * row stays, with `deleted_at`, so that its recording answers 410 rather than 404. 0 keeps everything.
 */
export class JournalRetention {
  private readonly passes: PeriodicPass<number>;

  constructor(private readonly deps: { db: Db; log: Logger; hostId: string; dataDir: string; retentionS: number; intervalS: number }) {
    this.passes = new PeriodicPass(() => this.pass(), { intervalS: deps.intervalS, log: deps.log, what: 'deleting session journals past their retention' });
  }

  start() {
    if (this.deps.retentionS > 0) this.passes.start();
  }

  stop() {
    return this.passes.stop();
  }

  /** One pass now (tests); resolves with how many journals it deleted. */
  async runOnce(): Promise<number> {
    return (await this.passes.runOnce()) ?? 0;
  }

  private async pass(): Promise<number> {
    const { db, retentionS, hostId, dataDir, log } = this.deps;
    if (retentionS <= 0) return 0;
    const cutoff = new Date(Date.now() - retentionS * 1000).toISOString();
    const expired = await db.selectFrom('session_journals as sj').select('sj.operation_id')
      .where('sj.host_id', '=', hostId).where('sj.deleted_at', 'is', null)
      .where('sj.ended_at', 'is not', null).where('sj.ended_at', '<', cutoff)
      // Not while a drain that takes the account's session output (and existed when the session ended)
      // has not delivered it to the end.
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('log_drains as d').select('d.id')
        .whereRef('d.account_id', '=', 'sj.account_id')
        .where('d.drain_ephemeral_sessions', '=', 1)
        .whereRef('d.created_at', '<=', 'sj.ended_at')
        .where(({ not: not2, exists: exists2, selectFrom: from2 }) => not2(exists2(from2('drain_session_cursors as c').select('c.drain_id')
          .whereRef('c.drain_id', '=', 'd.id').whereRef('c.operation_id', '=', 'sj.operation_id').where('c.done', '=', 1)))))))
      .limit(1000)
      .execute();
    let deleted = 0;
    for (const { operation_id } of expired) {
      const id = Number(operation_id);
      await deleteJournal(db, dataDir, id);
      deleted++;
    }
    if (deleted) log.info({ deleted }, 'deleted session journals past their retention');
    return deleted;
  }
}
