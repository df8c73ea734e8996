import { migration } from './migration.js';

/**
 * Drains read the session journals on the hosts (journal/) instead of the central `session_events`
 * outbox, which goes with the tables that fed it. Output stored there before this migration is not
 * carried over into journals: recordings of earlier sessions answer 410 and drains resume with new
 * sessions.
 */
export const drainJournalMigrations = migration('0008_drains_journals', async (db, { fk }) => {
  await db.schema.dropTable('session_events').ifExists().execute();
  await db.schema.dropTable('session_streams').ifExists().execute();
  await db.schema.dropTable('session_terminal_sizes').ifExists().execute();

  // One cursor per (drain, session) in drain_session_cursors replaces the drain's global cursor,
  // and every host ships its own sessions, so the per-drain lease goes too.
  for (const column of ['cursor', 'lease_owner', 'lease_until']) {
    await db.schema.alterTable('log_drains').dropColumn(column).execute();
  }
  // `active`, or `paused` (the receiver refused our credentials or the target): nothing is sent,
  // nothing is dropped, until an admin resumes it.
  await db.schema.alterTable('log_drains').addColumn('status', 'text', (c) => c.notNull().defaultTo('active')).execute();
  await db.schema.alterTable('log_drains').addColumn('paused_reason', 'text').execute();
  await db.schema.alterTable('log_drains').addColumn('paused_at', 'text').execute();
  // The HTTP status of the last error, shown to every member; the receiver's own words (the
  // start of its answer's body) only to operators.
  await db.schema.alterTable('log_drains').addColumn('last_error_status', 'integer').execute();
  await db.schema.alterTable('log_drains').addColumn('last_error_detail', 'text').execute();

  // Refused batches name the session and its seqs; rows from before keep nulls there.
  await db.schema.alterTable('log_drain_failures').dropColumn('first_event_id').execute();
  await db.schema.alterTable('log_drain_failures').dropColumn('last_event_id').execute();
  await db.schema.alterTable('log_drain_failures').addColumn('operation_id', fk).execute();
  await db.schema.alterTable('log_drain_failures').addColumn('first_seq', 'integer').execute();
  await db.schema.alterTable('log_drain_failures').addColumn('last_seq', 'integer').execute();
  await db.schema.alterTable('log_drain_failures').addColumn('detail', 'text').execute();

  // What each host has not yet delivered to each drain, written by that host's shipper; the API
  // sums the hosts' rows (a host cannot be asked at every GET).
  await db.schema.createTable('drain_host_backlogs')
    .addColumn('drain_id', fk, (c) => c.notNull().references('log_drains.id').onDelete('cascade'))
    .addColumn('host_id', 'text', (c) => c.notNull())
    .addColumn('backlog_bytes', fk, (c) => c.notNull().defaultTo(0))
    .addColumn('backlog_sessions', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('drain_host_backlogs_pk', ['drain_id', 'host_id'])
    .execute();
});
