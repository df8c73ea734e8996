import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';
import { columnTypes } from './0001_core.js';

/** A TTY session's terminal size at attach and after each resize, for its recording. */
export function terminalSizeMigrations(engine: DbEngine): Record<string, Migration> {
  const { id, fk, pk } = columnTypes(engine);
  return {
    '0005_terminal_sizes': {
      async up(db: Kysely<any>) {
        await db.schema.createTable('session_terminal_sizes')
          .addColumn('id', id, pk)
          .addColumn('operation_id', fk, (c) => c.notNull())
          .addColumn('time', 'text', (c) => c.notNull())
          .addColumn('cols', 'integer', (c) => c.notNull())
          .addColumn('rows', 'integer', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('session_terminal_sizes_operation').on('session_terminal_sizes').columns(['operation_id', 'id']).execute();
      },
    },
  };
}
