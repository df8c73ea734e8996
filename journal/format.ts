// The session output journal's on-disk format: one append-only file per session on its host.
//
// A record is a 16-byte header followed by its payload:
//   type u8 · stream u8 · reserved u16 · time f64 (epoch ms) · payload length u32
// Each record is written with one write() on a file opened O_APPEND, so a crash of the writing
// process never leaves half a record in the file except at a torn end, which readers ignore.

export const HEADER_BYTES = 16;

export const RecordType = {
  /** Bytes the session's program wrote, exactly as the client received them. */
  output: 1,
  /** The client's terminal size (JSON `{cols, rows}`): the recording's header and "r" events. */
  resize: 2,
  /** The session started (JSON lifecycle details): the drains' `session_started` event. */
  started: 3,
  /** The session ended (JSON lifecycle details): the drains' `session_ended` event, always last. */
  ended: 4,
  /** The journal reached its size bound; output after it went to the client but not here (JSON `{after_bytes}`). */
  truncated: 5,
  /** A TCP forward through the portal ended (JSON ForwardDetails): the drains' `port_forward` event; never its bytes. */
  forward: 6,
  /** A file copied through the portal's SFTP (JSON TransferDetails): the drains' `file_transfer` event; never its bytes. */
  transfer: 7,
  /** An observer joined or left a live session (JSON ObserverDetails): the drains' `session_observed` event. */
  observer: 8,
} as const;
export type RecordTypeName = keyof typeof RecordType;
export type RecordTypeCode = (typeof RecordType)[RecordTypeName];

export const StreamCode = { none: 0, stdout: 1, stderr: 2 } as const;
export type OutputStream = 'stdout' | 'stderr';

export interface JournalRecord {
  type: RecordTypeCode;
  stream: OutputStream | null;
  /** Epoch milliseconds at which the record was appended. */
  time: number;
  /** Where the record's header starts in the file. */
  fileOffset: number;
  payload: Buffer;
}

export function encodeHeader(type: RecordTypeCode, stream: OutputStream | null, time: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt8(type, 0);
  h.writeUInt8(stream ? StreamCode[stream] : StreamCode.none, 1);
  h.writeUInt16LE(0, 2);
  h.writeDoubleLE(time, 4);
  h.writeUInt32LE(length, 12);
  return h;
}

export function decodeHeader(buf: Buffer, at: number): { type: RecordTypeCode; stream: OutputStream | null; time: number; length: number } {
  const type = buf.readUInt8(at) as RecordTypeCode;
  const code = buf.readUInt8(at + 1);
  return {
    type,
    stream: code === StreamCode.stdout ? 'stdout' : code === StreamCode.stderr ? 'stderr' : null,
    time: buf.readDoubleLE(at + 4),
    length: buf.readUInt32LE(at + 12),
  };
}

/** Lifecycle details of a `started` record. */
export interface StartedDetails {
  user: { id: number; name: string; email: string };
  app: string;
  app_id: number;
  account: string;
  container_size_mb: number;
  command: string[] | null;
  container_id: string | null;
  created_at: string;
  /** The names of the session's extra env variables, never their values; absent when it was given none. */
  env_keys?: string[];
  /** A detached job (its program ran with no client); absent for every other session. */
  detached?: true;
}

/** Lifecycle details of a `forward` record: one `ssh -L` connection, what it reached and how much went each way. */
export interface ForwardDetails {
  /** Who forwarded (the portal connection's user). */
  user: { id: number; name: string; email: string };
  target_host: string;
  target_port: number;
  /** Whether the relay in the session's container connected; when not, `error` says why (the egress policy's refusal among others). */
  connected: boolean;
  error?: string;
  bytes_to_target: number;
  bytes_from_target: number;
  duration_s: number;
}

/** Lifecycle details of a `transfer` record: one file copied into or out of the session's container (scp, sftp, essh cp). */
export interface TransferDetails {
  /** Who copied (the portal connection's user). */
  user: { id: number; name: string; email: string };
  /** The file as the client named it (relative paths are from the container's working directory). */
  path: string;
  /** `upload`: written into the container; `download`: read out of it. */
  direction: 'upload' | 'download';
  bytes: number;
  /** The container's user the copy ran as (the session's program's). */
  container_user?: string;
  /** The client left before closing the file: `bytes` is what went through until then. */
  interrupted?: true;
}

/** Why an observer may watch a session: its owner, an admin of its account, or an operator. */
export type ObserverRole = 'owner' | 'account_admin' | 'operator';

/** Lifecycle details of an `observer` record: someone began or stopped watching the session's output live. */
export interface ObserverDetails {
  event: 'joined' | 'left';
  /** Who watched (the observer's portal connection's user). */
  user: { id: number; name: string; email: string };
  role: ObserverRole;
  /** Where the observer's connection came from. */
  address: string;
  /** How: `ssh watch-<id>@…` with a registered key, or a one-time watch token from the API (`essh watch`). */
  credential: 'key' | 'token';
  /** When the observer joined (RFC 3339); a `left` record repeats it. */
  joined_at: string;
  /** How long the observer watched: on `left` only. */
  duration_s?: number;
}

const ROLE_TEXT: Record<ObserverRole, string> = { owner: 'its owner', account_admin: 'an admin of its account', operator: 'an operator' };

/**
 * The one line that says an observer joined or left: on the watched user's terminal, in the drains'
 * `session_observed` event and on the recording's timeline alike.
 */
export function observerText(d: ObserverDetails): string {
  const who = `${d.user.name} <${d.user.email}>`;
  if (d.event === 'left') return `essh: ${who} stopped watching this session (after ${d.duration_s ?? 0} s)`;
  return `essh: ${who} (${ROLE_TEXT[d.role] ?? d.role}) is watching this session, read-only, from ${d.address}`;
}

/** Lifecycle details of an `ended` record. */
export interface EndedDetails {
  end_reason: string;
  end_message: string | null;
  ended_by: string | null;
  exit_code: number | null;
  duration_s: number;
  /** False when the journal does not hold every byte the program printed (its size bound was reached). */
  output_complete: boolean;
  /** A detached job; absent for every other session. */
  detached?: true;
}
