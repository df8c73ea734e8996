import { migration } from './migration.js';

/** Rate-limit counters every API process shares (services/rate-limit.ts). */
export const limitsMigrations = migration('0009_limits', async (db) => {
  await db.schema.createTable('rate_limits')
    .addColumn('key', 'text', (c) => c.primaryKey())
    // Start of the current window, epoch seconds, and what was taken in it.
    .addColumn('window_start', 'bigint', (c) => c.notNull())
    .addColumn('taken', 'integer', (c) => c.notNull())
    .execute();
});
