import { migration } from './migration.js';

/** A TTY session's terminal size at attach and after each resize, for its recording. */
export const terminalSizeMigrations = migration('0005_terminal_sizes', async (db, { id, fk, pk }) => {
  await db.schema.createTable('session_terminal_sizes')
    .addColumn('id', id, pk)
    .addColumn('operation_id', fk, (c) => c.notNull())
    .addColumn('time', 'text', (c) => c.notNull())
    .addColumn('cols', 'integer', (c) => c.notNull())
    .addColumn('rows', 'integer', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('session_terminal_sizes_operation').on('session_terminal_sizes').columns(['operation_id', 'id']).execute();
});
