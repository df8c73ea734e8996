import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';

/**
 * The extra environment a session was created with (`env` of POST /apps/{app}/sessions), sealed like an
 * app's (domain/app-env.ts); null when none was given, and again once the session has ended.
 */
export function sessionEnvMigrations(_engine: DbEngine): Record<string, Migration> {
  return {
    '0014_session_env': {
      async up(db: Kysely<any>) {
        await db.schema.alterTable('operations').addColumn('env', 'text').execute();
      },
    },
  };
}
