import { migration } from './migration.js';

/**
 * The idle timeout of a stack's and of an account's interactive sessions (`idle_timeout_s`, the
 * operator's: POST /stacks, PATCH /accounts/{handle}): no input and no output for that long ends the
 * session `idle` (portal/idle-timeout.ts). NULL (every row before): no idle timeout.
 */
export const idleTimeoutMigrations = migration('0017_idle_timeout', async (db) => {
  await db.schema.alterTable('stacks').addColumn('idle_timeout_s', 'integer').execute();
  await db.schema.alterTable('accounts').addColumn('idle_timeout_s', 'integer').execute();
});
