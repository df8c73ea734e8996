import { migration } from './migration.js';

/**
 * Whether a session is a detached job (`detach` of POST /apps/{app}/sessions): its program started at
 * once with no client, and no client may attach to it. 0 for every session before.
 */
export const detachedSessionMigrations = migration('0015_detached_sessions', async (db) => {
  await db.schema.alterTable('operations').addColumn('detached', 'integer', (c) => c.notNull().defaultTo(0)).execute();
});
