import type { Generated } from 'kysely';

// The drains part's tables, added to the shared Database type by declaration merging so that
// lib/db.ts stays untouched. Timestamps are ISO text, booleans 0/1, as in the core tables.
// How far a drain has delivered each session is in `drain_session_cursors` (journal/tables.ts).

/** A log drain of an account, with its delivery figures (summed over every host that ships to it). */
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
  /** `active`, or `paused` after the receiver refused our credentials or target (401/403/404). */
  status: Generated<string>;
  paused_reason: string | null;
  paused_at: string | null;
  delivered_events: number;
  failed_events: number;
  last_success_at: string | null;
  last_error_at: string | null;
  /** A sentence of ours, never the receiver's words: every member of the account may read it. */
  last_error: string | null;
  last_error_status: number | null;
  /** The start of the receiver's answer: shown to operators only. */
  last_error_detail: string | null;
  created_at: string;
}

/** Events a drain refused for good (a 4xx other than 401/403/404/408/413/429): kept so that nothing is dropped silently. */
export interface LogDrainFailuresTable {
  id: Generated<number>;
  drain_id: number;
  /** Null for failures recorded before session output moved to journals. */
  operation_id: number | null;
  first_seq: number | null;
  last_seq: number | null;
  events: number;
  status: number | null;
  message: string;
  /** The start of the receiver's answer: shown to operators only. */
  detail: string | null;
  at: string;
}

/** What one host has not yet delivered to one drain (journal bytes), written by that host's shipper. */
export interface DrainHostBacklogsTable {
  drain_id: number;
  host_id: string;
  backlog_bytes: number;
  backlog_sessions: number;
  updated_at: string;
}

export interface RedactionRulesTable {
  id: Generated<number>;
  account_id: number;
  name: string;
  pattern: string;
  preset: string | null;
  replacement: string;
  created_at: string;
  /** `active`, or `over_budget` once it took longer than its time budget on a record (redaction/redaction.ts). */
  status: Generated<string>;
  last_error: string | null;
  last_error_at: string | null;
  /** Records withheld because this rule took longer than its budget on them. */
  withheld_records: Generated<number>;
}

declare module '../lib/db.js' {
  interface Database {
    log_drains: LogDrainsTable;
    log_drain_failures: LogDrainFailuresTable;
    drain_host_backlogs: DrainHostBacklogsTable;
    redaction_rules: RedactionRulesTable;
  }
}
