import { migration } from './migration.js';

/**
 * Whether an account's users may copy files into and out of their sessions' containers through the
 * portal (scp, sftp, essh cp), the operator's to turn off (PATCH /accounts/{handle}). 1 (allowed) for
 * every account before, as the portal allowed nothing to refuse until then.
 */
export const fileTransferMigrations = migration('0020_file_transfer', async (db) => {
  await db.schema.alterTable('accounts').addColumn('file_transfer', 'integer', (c) => c.notNull().defaultTo(1)).execute();
});
