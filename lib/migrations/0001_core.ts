import type { Kysely, Migration } from 'kysely';
import type { DbEngine } from '../db.js';

/** Column types that differ by engine: auto-increment ids, the foreign keys that point at them. */
export function columnTypes(engine: DbEngine) {
  return {
    id: engine === 'postgres' ? ('bigserial' as const) : ('integer' as const),
    fk: engine === 'postgres' ? ('bigint' as const) : ('integer' as const),
    pk: (col: any) => (engine === 'sqlite' ? col.primaryKey().autoIncrement() : col.primaryKey()),
  };
}

export function coreMigrations(engine: DbEngine): Record<string, Migration> {
  const { id, fk, pk } = columnTypes(engine);
  return {
    '0001_core': {
      async up(db: Kysely<any>) {
        await db.schema.createTable('settings').addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('accounts')
          .addColumn('id', id, pk)
          .addColumn('handle', 'text', (c) => c.notNull().unique())
          .addColumn('plan', 'text', (c) => c.notNull())
          .addColumn('max_concurrent_sessions', 'integer')
          .addColumn('created_at', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('stacks')
          .addColumn('id', id, pk)
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('max_session_duration_s', 'integer', (c) => c.notNull())
          .addColumn('dedicated', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('apps')
          .addColumn('id', id, pk)
          .addColumn('handle', 'text', (c) => c.notNull().unique())
          .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
          .addColumn('stack_id', fk, (c) => c.notNull().references('stacks.id'))
          .addColumn('image', 'text', (c) => c.notNull())
          .addColumn('env', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('command', 'text')
          .addColumn('working_dir', 'text')
          .addColumn('user', 'text')
          .addColumn('network', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('users')
          .addColumn('id', id, pk)
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('email', 'text', (c) => c.notNull().unique())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('user_accounts')
          .addColumn('user_id', fk, (c) => c.notNull().references('users.id'))
          .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
          .addPrimaryKeyConstraint('user_accounts_pk', ['user_id', 'account_id']).execute();
        await db.schema.createTable('api_tokens')
          .addColumn('id', id, pk)
          .addColumn('user_id', fk, (c) => c.notNull().references('users.id'))
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('name', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('last_used_at', 'text')
          .addColumn('revoked_at', 'text').execute();
        await db.schema.createTable('ssh_keys')
          .addColumn('id', id, pk)
          .addColumn('user_id', fk, (c) => c.notNull().references('users.id'))
          .addColumn('public_key', 'text', (c) => c.notNull())
          .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', 'text', (c) => c.notNull()).execute();
        await db.schema.createTable('operations')
          .addColumn('id', id, pk)
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
          .addColumn('app_id', fk, (c) => c.notNull().references('apps.id'))
          .addColumn('user_id', fk, (c) => c.notNull().references('users.id'))
          .addColumn('stack', 'text', (c) => c.notNull())
          .addColumn('command', 'text')
          .addColumn('container_size_mb', 'integer', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('end_reason', 'text')
          .addColumn('end_message', 'text')
          .addColumn('ended_by', 'text')
          .addColumn('exit_code', 'integer')
          .addColumn('container_id', 'text')
          .addColumn('workflow_id', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .addColumn('connected_at', 'text')
          .addColumn('ended_at', 'text')
          .addColumn('expires_at', 'text').execute();
        await db.schema.createIndex('operations_account_state').on('operations')
          .columns(['account_id', 'state']).execute();
        await db.schema.createTable('session_tokens')
          .addColumn('id', id, pk)
          .addColumn('operation_id', fk, (c) => c.notNull().references('operations.id'))
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .addColumn('used_at', 'text').execute();
      },
    },
  };
}

