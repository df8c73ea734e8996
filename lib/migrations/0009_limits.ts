import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';

/** Rate-limit counters every API process shares (services/rate-limit.ts). */
export function limitsMigrations(_engine: DbEngine): Record<string, Migration> {
  return {
    '0009_limits': {
      async up(db: Kysely<any>) {
        await db.schema.createTable('rate_limits')
          .addColumn('key', 'text', (c) => c.primaryKey())
          // Start of the current window, epoch seconds, and what was taken in it.
          .addColumn('window_start', 'bigint', (c) => c.notNull())
          .addColumn('taken', 'integer', (c) => c.notNull())
          .execute();
      },
    },
  };
}
