import { migration } from './migration.js';

/**
 * The audit trail of administrators' changes (services/audit.ts), where each drain stands in shipping
 * it (drains/audit-shipper.ts), and the API tokens' expiry.
 */
export const auditMigrations = migration('0011_audit', async (db, { id, fk, pk }) => {
  await db.schema.createTable('audit_events')
    .addColumn('id', id, pk)
    .addColumn('at', 'text', (c) => c.notNull())
    // The actor as it was then (a user's name or role may change later); null: essh itself.
    .addColumn('actor_id', fk)
    .addColumn('actor_name', 'text')
    .addColumn('actor_email', 'text')
    .addColumn('actor_role', 'text')
    .addColumn('source_address', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_type', 'text', (c) => c.notNull())
    .addColumn('target_id', 'text', (c) => c.notNull())
    .addColumn('target_name', 'text')
    // JSON: the names of the fields changed, and the values that are no secret.
    .addColumn('fields', 'text', (c) => c.notNull())
    .addColumn('details', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('audit_events_at').on('audit_events').columns(['at']).execute();
  await db.schema.createIndex('audit_events_actor').on('audit_events').columns(['actor_id', 'id']).execute();
  // A user's event concerns every account the user belongs to; an operator's own (a stack) none.
  await db.schema.createTable('audit_event_accounts')
    .addColumn('event_id', fk, (c) => c.notNull().references('audit_events.id').onDelete('cascade'))
    .addColumn('account_id', fk, (c) => c.notNull())
    .addPrimaryKeyConstraint('audit_event_accounts_pk', ['event_id', 'account_id'])
    .execute();
  await db.schema.createIndex('audit_event_accounts_account').on('audit_event_accounts').columns(['account_id', 'event_id']).execute();
  // How far each drain has been sent its account's audit events, and which process sends them now.
  await db.schema.createTable('drain_audit_cursors')
    .addColumn('drain_id', fk, (c) => c.primaryKey().references('log_drains.id').onDelete('cascade'))
    .addColumn('last_event_id', fk, (c) => c.notNull().defaultTo(0))
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.alterTable('api_tokens').addColumn('expires_at', 'text').execute();
});
