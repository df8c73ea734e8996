import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { closeJournal } from '../journal/close.js';
import type { EndReason } from '../shapes/enumerations.js';

/**
 * Closes, with its `ended` record taken from the Operation record, each journal of this host whose
 * session ended without the host's teardown: the host was lost meanwhile (the workflow ended the session
 * without it, workflows/session.ts), or the workflow was closed outside essh. The teardown closes the
 * journal before the session is recorded `ended`, so no other journal matches. Its drains then deliver
 * the end as for any session. Returns how many it closed.
 */
export async function closeLeftJournals(deps: { db: Db; dataDir: string; hostId: string; log: Logger }): Promise<number> {
  const { db, hostId, log } = deps;
  const left = await db.selectFrom('session_journals as sj')
    .innerJoin('operations as o', 'o.id', 'sj.operation_id')
    .select(['o.id', 'o.created_at', 'o.ended_at', 'o.end_reason', 'o.end_message', 'o.ended_by', 'o.exit_code', 'o.detached'])
    .where('sj.host_id', '=', hostId).where('sj.ended_at', 'is', null).where('sj.deleted_at', 'is', null)
    .where('o.state', '=', 'ended')
    .execute();
  for (const o of left) {
    await closeJournal(deps, {
      operationId: Number(o.id), createdAt: o.created_at, endedAt: o.ended_at ?? undefined,
      endReason: (o.end_reason ?? 'terminated') as EndReason, endMessage: o.end_message, endedBy: o.ended_by, exitCode: o.exit_code,
      detach: o.detached === 1,
    }, (msg, fields) => log.warn(fields, msg));
  }
  if (left.length) log.info({ journals: left.length }, 'closed the journals of sessions that ended while this host was away');
  return left.length;
}
