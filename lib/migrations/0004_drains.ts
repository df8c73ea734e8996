import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';
import { columnTypes } from './0001_core.js';

/** Log drains, redaction rules and the captured session events (the drains' outbox and the recordings). */
export function drainsMigrations(engine: DbEngine): Record<string, Migration> {
  const { id, fk, pk } = columnTypes(engine);
  return {
    '0004_drains': {
      async up(db: Kysely<any>) {
        await db.schema.createTable('log_drains')
          .addColumn('id', id, pk)
          .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
          .addColumn('handle', 'text', (c) => c.notNull())
          .addColumn('drain_type', 'text', (c) => c.notNull())
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('token', 'text')
          .addColumn('ca_cert', 'text')
          .addColumn('index_pattern', 'text')
          .addColumn('pipeline', 'text')
          .addColumn('drain_ephemeral_sessions', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('cursor', fk, (c) => c.notNull().defaultTo(0))
          .addColumn('delivered_events', fk, (c) => c.notNull().defaultTo(0))
          .addColumn('failed_events', fk, (c) => c.notNull().defaultTo(0))
          .addColumn('last_success_at', 'text')
          .addColumn('last_error_at', 'text')
          .addColumn('last_error', 'text')
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('log_drains_account_handle', ['account_id', 'handle'])
          .execute();
        await db.schema.createTable('log_drain_failures')
          .addColumn('id', id, pk)
          .addColumn('drain_id', fk, (c) => c.notNull().references('log_drains.id').onDelete('cascade'))
          .addColumn('first_event_id', fk, (c) => c.notNull())
          .addColumn('last_event_id', fk, (c) => c.notNull())
          .addColumn('events', 'integer', (c) => c.notNull())
          .addColumn('status', 'integer')
          .addColumn('message', 'text', (c) => c.notNull())
          .addColumn('at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createTable('redaction_rules')
          .addColumn('id', id, pk)
          .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('pattern', 'text', (c) => c.notNull())
          .addColumn('preset', 'text')
          .addColumn('replacement', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createTable('session_streams')
          .addColumn('operation_id', fk, (c) => c.primaryKey())
          .addColumn('account_id', fk, (c) => c.notNull())
          .addColumn('next_seq', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('bytes_captured', fk, (c) => c.notNull().defaultTo(0))
          .addColumn('capture_ended_at', 'text')
          .execute();
        await db.schema.createTable('session_events')
          .addColumn('id', id, pk)
          .addColumn('operation_id', fk, (c) => c.notNull())
          .addColumn('account_id', fk, (c) => c.notNull())
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('stream', 'text', (c) => c.notNull().defaultTo('stdout'))
          .addColumn('time', 'text', (c) => c.notNull())
          .addColumn('byte_offset', fk, (c) => c.notNull())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('container_id', 'text')
          .addColumn('data', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('session_events_operation_seq', ['operation_id', 'seq'])
          .execute();
        // The shippers read "this account's events after my cursor".
        await db.schema.createIndex('session_events_account_id').on('session_events').columns(['account_id', 'id']).execute();
      },
    },
  };
}
