import type { Generated } from 'kysely';

// The drains part's tables, added to the shared Database type by declaration merging so that
// lib/db.ts stays untouched. Timestamps are ISO text, booleans 0/1, as in the core tables.

/** A log drain of an account; `cursor` is the id of the last session event it has settled (delivered or recorded as failed). */
export interface LogDrainsTable {
  id: Generated<number>;
  account_id: number;
  handle: string;
  drain_type: string;
  url: string;
  token: string | null;
  ca_cert: string | null;
  index_pattern: string | null;
  pipeline: string | null;
  drain_ephemeral_sessions: number;
  cursor: number;
  delivered_events: number;
  failed_events: number;
  last_success_at: string | null;
  last_error_at: string | null;
  last_error: string | null;
  lease_owner: string | null;
  lease_until: string | null;
  created_at: string;
}

/** Batches a drain refused for good (a 4xx other than 408/429): kept so that nothing is dropped silently. */
export interface LogDrainFailuresTable {
  id: Generated<number>;
  drain_id: number;
  first_event_id: number;
  last_event_id: number;
  events: number;
  status: number | null;
  message: string;
  at: string;
}

export interface RedactionRulesTable {
  id: Generated<number>;
  account_id: number;
  name: string;
  pattern: string;
  preset: string | null;
  replacement: string;
  created_at: string;
}

/**
 * The durable log of what each session showed, already redacted: the drains' shared outbox (each drain
 * keeps its own cursor into it) and the source of the session's recording.
 */
export interface SessionEventsTable {
  id: Generated<number>;
  operation_id: number;
  account_id: number;
  seq: number;
  kind: string; // output | session_started | session_ended
  stream: string; // stdout | stderr (stdout for a TTY, which merges them) | lifecycle
  time: string;
  byte_offset: number;
  host: string;
  container_id: string | null;
  data: string; // output text, or the lifecycle event's JSON details
  created_at: string;
}

/** Per session: how far capture got in the container's output, and the next seq to hand out. */
export interface SessionStreamsTable {
  operation_id: number;
  account_id: number;
  next_seq: number;
  bytes_captured: number;
  capture_ended_at: string | null;
}

/** A TTY session's terminal size from a moment on (written by the portal; the recording's header and "r" events). */
export interface SessionTerminalSizesTable {
  id: Generated<number>;
  operation_id: number;
  time: string;
  cols: number;
  rows: number;
}

declare module '../lib/db.js' {
  interface Database {
    log_drains: LogDrainsTable;
    log_drain_failures: LogDrainFailuresTable;
    redaction_rules: RedactionRulesTable;
    session_events: SessionEventsTable;
    session_streams: SessionStreamsTable;
    session_terminal_sizes: SessionTerminalSizesTable;
  }
}
