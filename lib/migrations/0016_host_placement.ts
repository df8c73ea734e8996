import { migration } from './migration.js';

/**
 * Many hosts per stack (docs/fleet.md): the host a session was placed on, written once by the create
 * transaction; each host's capacity as it reports it (max sessions, free memory); and `cordoned`,
 * written only by the operators' API. Sessions from before have no host (their workflows use the
 * stack's shared task queue).
 */
export const hostPlacementMigrations = migration('0016_host_placement', async (db, { fk }) => {
  await db.schema.alterTable('operations').addColumn('host_id', 'text').execute();
  // Placement counts the live sessions of each host of a stack, inside the create transaction.
  await db.schema.createIndex('operations_host_state').on('operations').columns(['host_id', 'state']).execute();
  await db.schema.alterTable('hosts').addColumn('max_sessions', 'integer').execute();
  await db.schema.alterTable('hosts').addColumn('free_memory_bytes', fk).execute();
  await db.schema.alterTable('hosts').addColumn('cordoned', 'integer', (c) => c.notNull().defaultTo(0)).execute();
});
