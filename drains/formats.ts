// The wire formats of CONTRACT §9, as pure functions of a batch of events.
import { utf8Boundary } from '../journal/reader.js';

/** An event read back from the outbox with the operation's metadata. */
export interface ShippedEvent {
  id: number;
  operationId: number;
  seq: number;
  kind: string;
  stream: string;
  time: string;
  byteOffset: number;
  host: string;
  containerId: string | null;
  data: string;
  app: string;
  appId: number;
  account: string;
  userName: string;
  userEmail: string;
}

interface Lifecycle {
  user?: { id: number; name: string; email: string };
  container_size_mb?: number;
  command?: string[] | null;
  end_reason?: string;
  end_message?: string | null;
  ended_by?: string | null;
  exit_code?: number | null;
  duration_s?: number;
}

/** The event's one-line text: the output without its line ending, or a sentence for a lifecycle event. */
export function logText(e: ShippedEvent): string {
  if (e.kind === 'output') return e.data.replace(/\r?\n$/, '');
  const d = JSON.parse(e.data) as Lifecycle;
  if (e.kind === 'session_started') {
    return `essh: session ${e.operationId} started by ${d.user?.name} <${d.user?.email}> on app ${e.app} (container ${d.container_size_mb} MB)`;
  }
  const exit = d.exit_code !== null && d.exit_code !== undefined ? `, exit code ${d.exit_code}` : '';
  const by = d.ended_by ? `, by ${d.ended_by}` : '';
  return `essh: session ${e.operationId} ended: ${d.end_reason}${by}${exit}, after ${d.duration_s} s`;
}

/** The HTTPS (and Elasticsearch document) shape of an event. */
export function jsonEvent(e: ShippedEvent): Record<string, unknown> {
  const base: Record<string, unknown> = {
    '@timestamp': e.time,
    time: e.time,
    log: logText(e),
    stream: e.stream,
    layer: 'ssh',
    app: e.app,
    app_id: e.appId,
    account: e.account,
    source: 'ephemeral_session',
    container: e.containerId,
    host: e.host,
    offset: e.byteOffset,
    seq: e.seq,
    operation_id: e.operationId,
    operation_user_name: e.userName,
    operation_user_email: e.userEmail,
  };
  if (e.kind !== 'output') {
    const d = JSON.parse(e.data) as Lifecycle;
    base.event = e.kind;
    if (e.kind === 'session_started') {
      base.container_size_mb = d.container_size_mb;
      base.command = d.command ?? null;
    } else {
      base.end_reason = d.end_reason;
      base.end_message = d.end_message ?? null;
      base.ended_by = d.ended_by ?? null;
      base.exit_code = d.exit_code ?? null;
      base.duration_s = d.duration_s;
    }
  }
  return base;
}

// ---- syslog (RFC 5424 over TLS, RFC 5425 / RFC 6587 octet counting) ----

/**
 * Receivers commonly cap a message at 8 KiB (rsyslog's default counts 8096 bytes): every message we send,
 * header and structured data included, stays below 8000 bytes.
 */
export const SYSLOG_MAX_MESSAGE_BYTES = 8000;
const PRI_USER_INFO = 14; // facility user (1) × 8 + severity informational (6)
const PRI_USER_NOTICE = 13;

/** PRINTUSASCII without spaces, at most `max` characters; "-" when empty (RFC 5424 §6.2). */
function headerField(value: string, max: number): string {
  const clean = value.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return clean || '-';
}

/** SD-PARAM values escape `"`, `\` and `]` (RFC 5424 §6.3.3). */
export function sdEscape(value: string): string {
  return value.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/** One event as one or more RFC 5424 messages (long text split at UTF-8 boundaries), each octet-count framed. */
export function syslogFrames(e: ShippedEvent, token: string | null): Buffer[] {
  const pri = e.kind === 'output' ? PRI_USER_INFO : PRI_USER_NOTICE;
  const header = `<${pri}>1 ${e.time} ${headerField(e.host, 255)} ${headerField(e.app, 48)} ${headerField(String(e.operationId), 128)} ${headerField(e.kind, 32)} `;
  const prefix = token ? `${token} ` : '';
  const text = Buffer.from(prefix + logText(e), 'utf8');
  const sd = (part: number, parts: number) =>
    `[essh@32473 operation_id="${e.operationId}" user_name="${sdEscape(e.userName)}" user_email="${sdEscape(e.userEmail)}"` +
    ` seq="${e.seq}" offset="${e.byteOffset}"${parts > 1 ? ` part="${part}/${parts}"` : ''}]`;
  // Room for the text once the header and the longest structured data (with a part="nn/nn") are counted.
  const overhead = Buffer.byteLength(header + sd(99, 99) + ' ', 'utf8') + prefix.length;
  const room = Math.max(256, SYSLOG_MAX_MESSAGE_BYTES - overhead);
  const pieces: Buffer[] = [];
  let rest = text;
  do {
    const cut = utf8Boundary(rest, room);
    pieces.push(rest.subarray(0, cut));
    rest = rest.subarray(cut);
  } while (rest.length);
  return pieces.map((piece, i) => {
    // The token prefix goes on every line, continuation parts included.
    const body = i === 0 || !prefix ? piece : Buffer.concat([Buffer.from(prefix), piece]);
    const msg = Buffer.concat([Buffer.from(header + sd(i + 1, pieces.length) + ' ', 'utf8'), body]);
    return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
  });
}

// ---- Elasticsearch _bulk ----

/** `index` patterns may use {yyyy}, {MM}, {dd} (of the event's time, UTC), {app} and {account}. */
export function indexName(pattern: string, e: ShippedEvent): string {
  const d = e.time.slice(0, 10).split('-');
  return pattern
    .replaceAll('{yyyy}', d[0] ?? '')
    .replaceAll('{MM}', d[1] ?? '')
    .replaceAll('{dd}', d[2] ?? '')
    .replaceAll('{app}', e.app)
    .replaceAll('{account}', e.account);
}

export const esDocumentId = (e: ShippedEvent) => `${e.operationId}:${e.seq}`;

export function bulkBody(events: readonly ShippedEvent[], pattern: string): string {
  let out = '';
  for (const e of events) {
    out += JSON.stringify({ create: { _index: indexName(pattern, e), _id: esDocumentId(e) } }) + '\n';
    out += JSON.stringify(jsonEvent(e)) + '\n';
  }
  return out;
}
