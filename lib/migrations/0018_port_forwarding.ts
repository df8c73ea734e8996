import { migration } from './migration.js';

/**
 * Whether an account's users may forward ports through the portal (`ssh -L`), the operator's to turn
 * off (PATCH /accounts/{handle}). 1 (allowed) for every account before, as the portal allowed nothing
 * to refuse until then.
 */
export const portForwardingMigrations = migration('0018_port_forwarding', async (db) => {
  await db.schema.alterTable('accounts').addColumn('port_forwarding', 'integer', (c) => c.notNull().defaultTo(1)).execute();
});
