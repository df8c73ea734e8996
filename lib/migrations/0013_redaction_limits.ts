import { migration } from './migration.js';

/**
 * A redaction rule's health, for its account's admins: a rule that took longer than its time budget on
 * some output (that output was withheld, redaction/redaction.ts) says so here, with how often.
 */
export const redactionLimitMigrations = migration('0013_redaction_limits', async (db) => {
  // `active`, or `over_budget` once the rule took longer than its budget on a record.
  await db.schema.alterTable('redaction_rules').addColumn('status', 'text', (c) => c.notNull().defaultTo('active')).execute();
  await db.schema.alterTable('redaction_rules').addColumn('last_error', 'text').execute();
  await db.schema.alterTable('redaction_rules').addColumn('last_error_at', 'text').execute();
  await db.schema.alterTable('redaction_rules').addColumn('withheld_records', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
});
