import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type Driver,
  type SqliteDialectConfig,
  type ColumnType,
  type Generated,
  type LogEvent,
  type SqliteDatabase,
} from 'kysely';

// Timestamps are ISO-8601 text and booleans 0/1 integers in both databases, so that rows read the
// same whichever engine is behind DATABASE_URL.
export interface AccountsTable {
  id: Generated<number>;
  handle: string;
  plan: string;
  max_concurrent_sessions: number | null;
  /** JSON array of image reference prefixes its apps may run; NULL: granted before grants existed. */
  image_prefixes: string | null;
  /** 1: its users may forward ports through the portal (`ssh -L`); 0: the operator turned it off. */
  port_forwarding: Generated<number>;
  /** 1: its users may copy files in and out of their sessions' containers (scp, sftp); 0: the operator turned it off. */
  file_transfer: Generated<number>;
  /** Seconds without input or output that end an interactive session (`idle`); NULL or 0: none. */
  idle_timeout_s: Generated<number | null>;
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
  /** Seconds without input or output that end an interactive session (`idle`); NULL or 0: none. */
  idle_timeout_s: Generated<number | null>;
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
  /** Past it the token is refused; null: it does not expire. Optional on insert (tokens made before expiry existed). */
  expires_at: ColumnType<string | null, string | null | undefined, string | null>;
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
  /** The session's extra environment, sealed (domain/app-env.ts); null when none, or once it has ended. */
  env: string | null;
  /** 1: a detached job (its program runs with no client). */
  detached: Generated<number>;
  /** The host the session was placed on (services/sessions.ts create); null for sessions from before placement. */
  host_id: string | null;
}
export interface SessionTokensTable {
  id: Generated<number>;
  operation_id: number;
  token_hash: string;
  expires_at: string;
  used_at: string | null;
  /** A watch token's observer (`watch-<id>` only); null: the session's own attach token. */
  watcher_id: number | null;
}
export interface RateLimitsTable {
  key: string;
  window_start: number;
  taken: number;
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
  rate_limits: RateLimitsTable;
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
    return new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: observe });
  }
  const file = url.replace(/^sqlite:(\/\/)?/, '');
  if (file !== ':memory:') {
    mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    createOwnerOnlySqliteFile(file);
  }
  const sqlite = openSqlite(file);
  // WAL lets the API read while a worker writes; busy_timeout covers the moments they collide.
  sqlite.exec('PRAGMA journal_mode = WAL');
  sqlite.exec('PRAGMA busy_timeout = 5000');
  sqlite.exec('PRAGMA foreign_keys = ON');
  return new Kysely<Database>({ dialect: new WriterFirstSqliteDialect({ database: sqlite }), log: observe });
}

/**
 * Transactions that take SQLite's write lock when they begin (BEGIN IMMEDIATE), not at their first
 * write. Several processes share one file (hosts beside the API): a deferred transaction that reads,
 * then writes after another process has committed, fails at once with SQLITE_BUSY (its snapshot is
 * stale, so busy_timeout cannot help); an immediate one waits its turn under busy_timeout instead.
 */
class WriterFirstSqliteDialect extends SqliteDialect {
  constructor(private readonly settings: SqliteDialectConfig) {
    super(settings);
  }
  override createDriver(): Driver {
    return new (class extends SqliteDriver {
      override async beginTransaction(connection: DatabaseConnection): Promise<void> {
        await connection.executeQuery(CompiledQuery.raw('begin immediate'));
      }
    })(this.settings);
  }
}

/**
 * Makes a SQLite database and its -wal and -shm files its user's alone (0600) whatever the umask of
 * the process that opens it: the file is created 0600 before SQLite opens it, and SQLite creates the
 * -wal and -shm with the mode of the database file.
 */
function createOwnerOnlySqliteFile(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  tightenSqliteFiles(file);
}

/**
 * Sets a SQLite database and its -wal and -shm files, those that exist, to 0600: an earlier version
 * made them under the default umask, readable to every user of the machine.
 */
export function tightenSqliteFiles(file: string): void {
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

let observer: ((sql: string) => void) | undefined;
/**
 * Lets a test see every statement this process sends (e.g. that unauthenticated SSH clients cause no
 * write); nothing in essh itself observes queries.
 */
export function observeQueries(fn: ((sql: string) => void) | undefined) {
  observer = fn;
}
function observe(event: LogEvent) {
  if (observer && event.level === 'query') observer(event.query.sql);
}

/** Which SQLite binding this Node.js uses (see openSqlite). */
export const sqliteDriver: 'node:sqlite' | 'better-sqlite3' = Number(process.versions.node.split('.')[0]) >= 24 ? 'node:sqlite' : 'better-sqlite3';

/**
 * SQLite through Node's own `node:sqlite` on Node 24 and later, through better-sqlite3 before. The
 * native better-sqlite3 12 derives its objects from node::ObjectWrap, whose destructor in the headers
 * of Node 24.19 and later asserts that a Node environment is current: a statement collected by a GC
 * that runs outside any context (an idle-time GC, a worker thread's or the process's teardown) aborts
 * the process ("Assertion failed: (env) != nullptr"). better-sqlite3 13 no longer does that, but needs
 * Node 22; `node:sqlite` has neither problem and no ExperimentalWarning on Node 24. See
 * docs/node-versions.md.
 */
function openSqlite(file: string): SqliteDatabase & { exec(sql: string): unknown } {
  if (sqliteDriver === 'better-sqlite3') {
    const SQLite = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
    return new SQLite(file);
  }
  const { DatabaseSync } = process.getBuiltinModule('node:sqlite') as NodeSqlite;
  const db = new DatabaseSync(file);
  return {
    exec: (sql) => db.exec(sql),
    close: () => db.close(),
    // Kysely passes the parameters as one array; node:sqlite takes them one by one, and binds every
    // JS number as a REAL: whole numbers go as BigInt, so that they are INTEGERs as with better-sqlite3
    // (a REAL 5.0 would be stored as '5.0' in a TEXT column). Rows come with a null prototype: copied
    // into plain objects, they compare and serialise like better-sqlite3's.
    prepare(sql) {
      const stmt = db.prepare(sql);
      const bind = (params: ReadonlyArray<unknown>) => params.map((p) => (typeof p === 'number' && Number.isInteger(p) ? BigInt(p) : p));
      return {
        reader: stmt.columns().length > 0,
        all: (params) => stmt.all(...bind(params)).map((row) => ({ ...row })),
        run: (params) => stmt.run(...bind(params)),
        *iterate(params) {
          for (const row of stmt.iterate(...bind(params))) yield { ...row };
        },
      };
    },
  };
}

/** The part of `node:sqlite` used here (its types are not in @types/node 20). */
interface NodeSqlite {
  DatabaseSync: new (file: string) => {
    exec(sql: string): void;
    close(): void;
    prepare(sql: string): {
      columns(): unknown[];
      all(...params: unknown[]): Record<string, unknown>[];
      run(...params: unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
      iterate(...params: unknown[]): IterableIterator<Record<string, unknown>>;
    };
  };
}

export function engineOf(url: string): DbEngine {
  return isPostgresUrl(url) ? 'postgres' : 'sqlite';
}


export const nowIso = () => new Date().toISOString();
