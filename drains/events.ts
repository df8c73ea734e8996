// TEMPORARY (issue 9): what is left of the session_events road. Migration 0008 dropped these tables;
// session output lives in the hosts' journals (journal/) and drains, recordings and retention read
// those. These declarations exist only so that the old capture (drains/capture*.ts), the portal's
// TerminalSizeRecorder and test/harness.ts's capture helpers still compile until the exec portal
// replaces them; every query on these tables fails at run time, and appendEvents throws. Delete this
// file together with them.

import type { Generated } from 'kysely';

/** @deprecated dropped by migration 0008 */
export interface SessionEventsTable {
  id: Generated<number>;
  operation_id: number;
  account_id: number;
  seq: number;
  kind: string;
  stream: string;
  time: string;
  byte_offset: number;
  host: string;
  container_id: string | null;
  data: string;
  created_at: string;
}
/** @deprecated dropped by migration 0008 */
export interface SessionStreamsTable {
  operation_id: number;
  account_id: number;
  next_seq: number;
  bytes_captured: number;
  capture_ended_at: string | null;
}
/** @deprecated dropped by migration 0008 */
export interface SessionTerminalSizesTable {
  id: Generated<number>;
  operation_id: number;
  time: string;
  cols: number;
  rows: number;
}

declare module '../lib/db.js' {
  interface Database {
    /** @deprecated dropped by migration 0008: session output is in journals */
    session_events: SessionEventsTable;
    /** @deprecated dropped by migration 0008 */
    session_streams: SessionStreamsTable;
    /** @deprecated dropped by migration 0008: terminal sizes are `resize` records of the journal */
    session_terminal_sizes: SessionTerminalSizesTable;
  }
}

export type EventKind = 'output' | 'session_started' | 'session_ended';
/** @deprecated the old capture's event shape */
export interface NewEvent {
  kind: EventKind;
  stream?: 'stdout' | 'stderr';
  time: string;
  byteOffset: number;
  containerId: string | null;
  data: string;
}

/** @deprecated session_events is gone: output goes to the session's journal (journal/writer.ts). */
export async function appendEvents(..._args: unknown[]): Promise<void> {
  throw new Error('session_events was removed (issue 9): session output is written to its journal on the host (journal/writer.ts)');
}
