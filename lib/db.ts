import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  type Generated,
  type MigrationProvider,
} from 'kysely';
import { allMigrations } from './migrations/index.js';

// Timestamps are ISO-8601 text and booleans 0/1 integers in both databases, so that rows read the
// same whichever engine is behind DATABASE_URL.
export interface AccountsTable {
  id: Generated<number>;
  handle: string;
  plan: string;
  max_concurrent_sessions: number | null;
  /** JSON array of image reference prefixes its apps may run; NULL: granted before grants existed. */
  image_prefixes: string | null;
  created_at: string;
}
/** The stacks an operator granted an account, besides the shared ones. */
export interface AccountStacksTable {
  account_id: number;
  stack_id: number;
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
  /** Containers kept started in advance for this app's sessions (CONTRACT §7). */
  warm_pool: number;
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
  account_stacks: AccountStacksTable;
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
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle connection the server closes (a restart, a failover, an admin) is dropped by the pool
    // and the next query opens a new one; unhandled, its 'error' event would end the process.
    pool.on('error', () => undefined);
    return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
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

/** Runs pending migrations; called on every start, for both databases. */
export async function migrate(db: Db, engine: DbEngine): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => allMigrations(engine) };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(`Database migration ${failed?.migrationName ?? ''} failed: ${String((error as Error)?.message ?? error)}`);
  }
}

export const nowIso = () => new Date().toISOString();
