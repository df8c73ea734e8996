import { migration } from './migration.js';

/**
 * Session output lives in journals on the session's host (journal/); the database keeps only where
 * each journal is, how far each drain has delivered it, and which hosts serve which stacks.
 */
export const journalMigrations = migration('0007_journals', async (db, { fk }) => {
  await db.schema.createTable('session_journals')
    .addColumn('operation_id', fk, (c) => c.primaryKey())
    .addColumn('account_id', fk, (c) => c.notNull())
    .addColumn('host_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    // Set once the journal's `ended` record is written: nothing is appended after it.
    .addColumn('ended_at', 'text')
    .addColumn('output_bytes', fk, (c) => c.notNull().defaultTo(0))
    .addColumn('truncated', 'integer', (c) => c.notNull().defaultTo(0))
    // Set when retention deleted the file; the row stays so that a recording can answer 410.
    .addColumn('deleted_at', 'text')
    .execute();
  await db.schema.createIndex('session_journals_host').on('session_journals').columns(['host_id', 'account_id']).execute();
  await db.schema.createTable('drain_session_cursors')
    .addColumn('drain_id', fk, (c) => c.notNull().references('log_drains.id').onDelete('cascade'))
    .addColumn('operation_id', fk, (c) => c.notNull())
    // The next event to deliver: its seq and where it starts in the journal (journal/reader.ts).
    .addColumn('seq', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('file_offset', fk, (c) => c.notNull().defaultTo(0))
    .addColumn('skip', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('output_offset', fk, (c) => c.notNull().defaultTo(0))
    // 1 once the `session_ended` event is delivered: this drain is done with the session.
    .addColumn('done', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('drain_session_cursors_pk', ['drain_id', 'operation_id'])
    .execute();
  await db.schema.createTable('hosts')
    .addColumn('host_id', 'text', (c) => c.primaryKey())
    .addColumn('stacks', 'text', (c) => c.notNull()) // JSON array of stack names
    // Where its SSH portal answers, as put in `connect` blocks; null when it runs no portal.
    .addColumn('ssh_host', 'text')
    .addColumn('ssh_port', 'integer')
    .addColumn('ssh_host_key', 'text')
    // Its internal endpoint (recordings), reachable by the API's processes.
    .addColumn('internal_url', 'text')
    .addColumn('free_disk_bytes', fk)
    .addColumn('seen_at', 'text', (c) => c.notNull())
    .execute();
});
