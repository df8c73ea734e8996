import { migration } from './migration.js';

/**
 * One-time tokens to watch a live session (POST /sessions/{id}/watch, `essh watch`): a session token
 * with the observer's user in `watcher_id` logs in as `watch-<id>` only, never as `session-<id>`. NULL
 * (every token before): a token to attach as the session's client, as before.
 */
export const watchTokenMigrations = migration('0021_watch_tokens', async (db, { fk }) => {
  await db.schema.alterTable('session_tokens').addColumn('watcher_id', fk, (c) => c.references('users.id')).execute();
});
