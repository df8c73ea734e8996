import { migration } from './migration.js';

/**
 * The extra environment a session was created with (`env` of POST /apps/{app}/sessions), sealed like an
 * app's (domain/app-env.ts); null when none was given, and again once the session has ended.
 */
export const sessionEnvMigrations = migration('0014_session_env', async (db) => {
  await db.schema.alterTable('operations').addColumn('env', 'text').execute();
});
