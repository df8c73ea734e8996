import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  sql,
  type Generated,
  type Migration,
  type MigrationProvider,
} from 'kysely';

// Timestamps are ISO-8601 text and booleans 0/1 integers in both databases, so that rows read the
// same whichever engine is behind DATABASE_URL.
export interface AccountsTable {
  id: Generated<number>;
  handle: string;
  plan: string;
  max_concurrent_sessions: number | null;
  created_at: string;
}
export interface StacksTable {
  id: Generated<number>;
  name: string;
  max_session_duration_s: number;
  dedicated: number;
  created_at: string;
}
export interface AppsTable {
  id: Generated<number>;
  handle: string;
  account_id: number;
  stack_id: number;
  image: string;
  env: string; // JSON object
  command: string | null; // JSON array
  working_dir: string | null;
  user: string | null;
  network: string | null;
  created_at: string;
}
export interface UsersTable {
  id: Generated<number>;
  name: string;
  email: string;
  role: string;
  created_at: string;
}
export interface UserAccountsTable {
  user_id: number;
  account_id: number;
}
export interface ApiTokensTable {
  id: Generated<number>;
  user_id: number;
  token_hash: string;
  name: string | null;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}
export interface SshKeysTable {
  id: Generated<number>;
  user_id: number;
  public_key: string;
  fingerprint: string;
  created_at: string;
}
/** One row per session: the Operation record and the session are two views of it (id = operation id). */
export interface OperationsTable {
  id: Generated<number>;
  type: string;
  account_id: number;
  app_id: number;
  user_id: number;
  stack: string;
  command: string | null; // JSON array
  container_size_mb: number;
  state: string;
  status: string;
  end_reason: string | null;
  end_message: string | null;
  ended_by: string | null;
  exit_code: number | null;
  container_id: string | null;
  workflow_id: string | null;
  created_at: string;
  updated_at: string;
  connected_at: string | null;
  ended_at: string | null;
  expires_at: string | null;
}
export interface SessionTokensTable {
  id: Generated<number>;
  operation_id: number;
  token_hash: string;
  expires_at: string;
  used_at: string | null;
}
export interface SettingsTable {
  key: string;
  value: string;
}

export interface Database {
  accounts: AccountsTable;
  stacks: StacksTable;
  apps: AppsTable;
  users: UsersTable;
  user_accounts: UserAccountsTable;
  api_tokens: ApiTokensTable;
  ssh_keys: SshKeysTable;
  operations: OperationsTable;
  session_tokens: SessionTokensTable;
  settings: SettingsTable;
}

export type Db = Kysely<Database>;
export type DbEngine = 'sqlite' | 'postgres';

export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}

export function openDatabase(url: string): Db {
  if (isPostgresUrl(url)) {
    return new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 10 }) }),
    });
  }
  const file = url.replace(/^sqlite:(\/\/)?/, '');
  if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const sqlite = new SQLite(file);
  // WAL lets the API read while a worker writes; busy_timeout covers the moments they collide.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  return new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
}

export function engineOf(url: string): DbEngine {
  return isPostgresUrl(url) ? 'postgres' : 'sqlite';
}

function idColumn(engine: DbEngine) {
  return engine === 'postgres' ? ('bigserial' as const) : ('integer' as const);
}

function migrations(engine: DbEngine): Record<string, Migration> {
  const id = idColumn(engine);
  const fk = engine === 'postgres' ? ('bigint' as const) : ('integer' as const);
  const pk = (col: any) => (engine === 'sqlite' ? col.primaryKey().autoIncrement() : col.primaryKey());
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

/** Runs pending migrations; called on every start, for both databases. */
export async function migrate(db: Db, engine: DbEngine): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations(engine) };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(`Database migration ${failed?.migrationName ?? ''} failed: ${String((error as Error)?.message ?? error)}`);
  }
}

export const nowIso = () => new Date().toISOString();

/** Compares text timestamps portably (both engines store ISO-8601 in UTC, which sorts as text). */
export const isoAfter = (column: string, iso: string) => sql<boolean>`${sql.ref(column)} > ${iso}`;
