import { Migrator, type Migration, type MigrationProvider } from 'kysely';
import type { Db, DbEngine } from '../db.js';
import { coreMigrations } from './0001_core.js';
import { drainsMigrations } from './0004_drains.js';
import { terminalSizeMigrations } from './0005_terminal_sizes.js';
import { tenancyMigrations } from './0006_tenancy.js';
import { journalMigrations } from './0007_journals.js';
import { limitsMigrations } from './0009_limits.js';
import { drainJournalMigrations } from './0008_drains_journals.js';
import { auditMigrations } from './0011_audit.js';
import { redactionLimitMigrations } from './0013_redaction_limits.js';
import { sessionEnvMigrations } from './0014_session_env.js';
import { detachedSessionMigrations } from './0015_detached_sessions.js';
import { hostPlacementMigrations } from './0016_host_placement.js';
import { idleTimeoutMigrations } from './0017_idle_timeout.js';
import { portForwardingMigrations } from './0018_port_forwarding.js';
import { hostPoolMigrations } from './0019_host_pool.js';
import { fileTransferMigrations } from './0020_file_transfer.js';
import { watchTokenMigrations } from './0021_watch_tokens.js';

/**
 * Every migration, by name (applied in name order). Each part of essh keeps its own tables in its own
 * file here, declared with migration() (migration.ts); add one import and one spread per file.
 */
export function allMigrations(engine: DbEngine): Record<string, Migration> {
  return {
    ...coreMigrations(engine),
    ...drainsMigrations(engine),
    ...terminalSizeMigrations(engine),
    ...tenancyMigrations(engine),
    ...journalMigrations(engine),
    ...drainJournalMigrations(engine),
    ...limitsMigrations(engine),
    ...auditMigrations(engine),
    ...redactionLimitMigrations(engine),
    ...sessionEnvMigrations(engine),
    ...detachedSessionMigrations(engine),
    ...hostPlacementMigrations(engine),
    ...idleTimeoutMigrations(engine),
    ...portForwardingMigrations(engine),
    ...hostPoolMigrations(engine),
    ...fileTransferMigrations(engine),
    ...watchTokenMigrations(engine),
  };
}

/** Runs pending migrations; called on every start, for both databases. */
export async function migrate(db: Db, engine: DbEngine): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => allMigrations(engine) };
  // Migration numbers are handed to changes made side by side, which may land in another order (0017
  // after 0019): each adds its own columns, so one applied after a higher number is as good.
  const { error, results } = await new Migrator({ db, provider, allowUnorderedMigrations: true }).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(`Database migration ${failed?.migrationName ?? ''} failed: ${String((error as Error)?.message ?? error)}`);
  }
}
