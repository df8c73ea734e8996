import type { Transaction } from 'kysely';
import type { Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { announceRecordChanged } from './record-news.js';
import { processCounters } from '../lib/metrics.js';
import { operationStatusFor, sessionWorkflowId, type SessionRecordUpdate } from '../shapes/session-workflow.js';
import { SESSION_STATES, type EndReason } from '../shapes/enumerations.js';

/**
 * The one writer of the Operation record (the `operations` row, which is also the Session): made when
 * a session is accepted, moved forward by the session's workflow, and closed by the API or the
 * reconciler only when no workflow is there to do it. Every state change goes through here, so the
 * rules (states only move forward, an ended row never changes, the status follows the state) hold
 * whoever asks.
 */

export interface NewOperation {
  accountId: number;
  appId: number;
  userId: number;
  stack: string;
  command: string[] | null;
  containerSizeMb: number;
  createdAt: string;
  expiresAt: string;
  /** The session's extra environment, already sealed (domain/app-env.ts); null when none was given. */
  sealedEnv: string | null;
  /** A detached job: its program starts at once, with no client. */
  detached?: boolean;
  /** The host placement chose (services/placement.ts); null when the stack had no live host. */
  hostId?: string | null;
}

/** Inserts a new session's record (`provisioning`, status `queued`) inside the caller's transaction; returns its id. */
export async function insertOperation(trx: Transaction<Database>, op: NewOperation): Promise<number> {
  const row = await trx.insertInto('operations').values({
    type: 'execute',
    account_id: op.accountId,
    app_id: op.appId,
    user_id: op.userId,
    stack: op.stack,
    command: op.command ? JSON.stringify(op.command) : null,
    container_size_mb: op.containerSizeMb,
    state: 'provisioning',
    status: 'queued',
    created_at: op.createdAt,
    updated_at: op.createdAt,
    expires_at: op.expiresAt,
    env: op.sealedEnv,
    detached: op.detached ? 1 : 0,
    host_id: op.hostId ?? null,
  }).returning('id').executeTakeFirstOrThrow();
  const id = Number(row.id);
  await trx.updateTable('operations').set({ workflow_id: sessionWorkflowId(id) }).where('id', '=', id).execute();
  return id;
}

/**
 * What the session's workflow publishes. Idempotent under retries and safe against reordering: a row
 * only moves forward through the states, and an ended row is never changed again.
 */
export async function recordSessionState(db: Db, u: SessionRecordUpdate): Promise<void> {
  const rank = SESSION_STATES.indexOf(u.state);
  const notLaterThan = SESSION_STATES.slice(0, rank + 1);
  const result = await db
    .updateTable('operations')
    .set({
      state: u.state,
      status: operationStatusFor(u.state, u.endReason ?? null),
      container_id: u.containerId ?? null,
      connected_at: u.connectedAt ?? null,
      ended_at: u.endedAt ?? null,
      end_reason: u.endReason ?? null,
      end_message: u.endMessage ?? null,
      ended_by: u.endedBy ?? null,
      exit_code: u.exitCode ?? null,
      updated_at: nowIso(),
      // Nothing starts in an ended session: its extra env is kept no longer than it could be used.
      ...(u.state === 'ended' ? { env: null } : {}),
    })
    .where('id', '=', u.operationId)
    .where('state', 'in', u.state === 'ended' ? SESSION_STATES.slice(0, -1) : notLaterThan)
    .executeTakeFirst();
  // Counted once: a retried activity finds the row ended already and changes nothing.
  if (u.state === 'ended' && Number(result.numUpdatedRows) > 0) processCounters.sessionsEnded.inc({ end_reason: u.endReason ?? 'unknown' });
  announceRecordChanged(u.operationId);
}

/**
 * Ends a record whose workflow cannot: one that never started (the API could not reach Temporal) or
 * one that closed without recording its end (terminated by hand). Leaves an ended row alone.
 */
export async function closeOperation(
  db: Db, id: number, end: { reason: EndReason; message: string; endedBy?: string | null; exitCode?: number | null },
): Promise<void> {
  const now = nowIso();
  const result = await db.updateTable('operations').set({
    state: 'ended', status: operationStatusFor('ended', end.reason), end_reason: end.reason, end_message: end.message,
    ended_by: end.endedBy ?? null, exit_code: end.exitCode ?? null, ended_at: now, updated_at: now, env: null,
  }).where('id', '=', id).where('state', '!=', 'ended').executeTakeFirst();
  if (Number(result.numUpdatedRows) > 0) processCounters.sessionsEnded.inc({ end_reason: end.reason });
  announceRecordChanged(id);
}
