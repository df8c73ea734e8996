// The journal part's tables, added to the shared Database type by declaration merging.
import type { Generated, Selectable } from 'kysely';

/** Where a session's output journal is (its host) and whether it is complete (see journal/). */
export interface SessionJournalsTable {
  operation_id: number;
  account_id: number;
  host_id: string;
  created_at: string;
  ended_at: string | null;
  output_bytes: number;
  truncated: number;
  deleted_at: string | null;
}

/** How far a drain has delivered one session's journal: the next event's seq and position. */
export interface DrainSessionCursorsTable {
  drain_id: number;
  operation_id: number;
  seq: number;
  file_offset: number;
  skip: number;
  output_offset: number;
  done: number;
  updated_at: string;
}

/** A stack host: which stacks it serves, where its portal and internal endpoint answer, its free disk. */
export interface HostsTable {
  host_id: string;
  stacks: string;
  ssh_host: string | null;
  ssh_port: number | null;
  ssh_host_key: string | null;
  internal_url: string | null;
  free_disk_bytes: number | null;
  /** What the host reports it can hold (ESSH_HOST_MAX_SESSIONS); null: it reported before placement existed. */
  max_sessions: number | null;
  free_memory_bytes: number | null;
  /** 1: an operator cordoned it (POST /hosts/{id}/cordon), so it takes no new session. Only the operators' API writes it. */
  cordoned: Generated<number>;
  /** Its warm pool as it last reported: containers running, and how many its stacks' apps ask for. Null: no pool. */
  pool_ready: number | null;
  pool_target: number | null;
  seen_at: string;
}

/** A `hosts` row as read. */
export type HostRow = Selectable<HostsTable>;

declare module '../lib/db.js' {
  interface Database {
    session_journals: SessionJournalsTable;
    drain_session_cursors: DrainSessionCursorsTable;
    hosts: HostsTable;
  }
}
