import { migration } from './migration.js';

/**
 * A host's warm pool as it last reported it (GET /hosts): its pool containers running and the number its
 * apps ask for. Null until a host of this version reports, and for a host without a pool.
 */
export const hostPoolMigrations = migration('0019_host_pool', async (db) => {
  await db.schema.alterTable('hosts').addColumn('pool_ready', 'integer').execute();
  await db.schema.alterTable('hosts').addColumn('pool_target', 'integer').execute();
});
