// The wire formats of CONTRACT §9, as pure functions of a batch of events. A 50 MB session is half a
// million events, so the HTTPS body is written straight into a Buffer: around the bytes computed once
// per session (its app, user, container…) go the event's time, numbers and text, and plain ASCII
// output (the common case) is copied from the journal without ever becoming a JavaScript string.
import { utf8Boundary, type LifecycleKind } from '../journal/reader.js';
import { observerText, type ForwardDetails, type ObserverDetails, type TransferDetails } from '../journal/format.js';
import type { AuditEventView } from '../services/audit.js';

/** What every event of one session carries: read once per session (from its journal's `started` record). */
export interface SessionMeta {
  operationId: number;
  accountId: number;
  app: string;
  appId: number;
  account: string;
  userName: string;
  userEmail: string;
  containerId: string | null;
  /** The host that ran the session (its journal's host). */
  host: string;
  /** `"layer":"ssh","app":…,"operation_user_email":…`: the JSON fields every event of the session shares. */
  jsonFragment: string;
  /** `","stream":"stdout",<jsonFragment>,"offset":` as UTF-8, per stream: what follows an output event's log. */
  jsonTail: { stdout: Buffer; stderr: Buffer };
}

export function sessionMeta(m: Omit<SessionMeta, 'jsonFragment' | 'jsonTail'>): SessionMeta {
  const shared = {
    layer: 'ssh', app: m.app, app_id: m.appId, account: m.account, source: 'ephemeral_session', container: m.containerId,
    host: m.host, operation_id: m.operationId, operation_user_name: m.userName, operation_user_email: m.userEmail,
  };
  const jsonFragment = JSON.stringify(shared).slice(1, -1);
  const tail = (stream: string) => Buffer.from(`","stream":"${stream}",${jsonFragment},"offset":`, 'utf8');
  return { ...m, jsonFragment, jsonTail: { stdout: tail('stdout'), stderr: tail('stderr') } };
}

let isoMs = Number.NaN;
let isoText = '';
/** ISO-8601 of an epoch ms; the events of one journal record share their time, so the last one is kept. */
export function isoTime(ms: number): string {
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

export type EventKind = 'output' | LifecycleKind;

/** One event on its way to a drain. */
export interface ShippedEvent {
  session: SessionMeta;
  seq: number;
  kind: EventKind;
  stream: 'stdout' | 'stderr' | 'lifecycle';
  /** ISO-8601 time of the event's first byte. */
  time: string;
  /** Byte offset of the event in the session's output. */
  offset: number;
  /**
   * Output: the text as the terminal showed it (line ending included), already redacted; null when no
   * rule applies to the account, the text then being `data` as UTF-8.
   */
  text: string | null;
  /** Output: the bytes from the journal (line ending included). */
  data?: Buffer;
  /** Lifecycle events: the journal record's details. */
  details?: Record<string, unknown>;
}

interface Lifecycle {
  user?: { id: number; name: string; email: string };
  container_size_mb?: number;
  command?: string[] | null;
  env_keys?: string[];
  end_reason?: string;
  end_message?: string | null;
  ended_by?: string | null;
  exit_code?: number | null;
  duration_s?: number;
  output_complete?: boolean;
  after_bytes?: number;
  detached?: true;
}

/** A `port_forward` event's one line (the drains' and the recording's timeline). */
export function forwardText(d: ForwardDetails): string {
  const who = `${d.user.name} <${d.user.email}>`;
  const target = `${d.target_host}:${d.target_port}`;
  if (!d.connected) return `essh: ${who} forwarded a port to ${target}: refused (${d.error ?? 'no reason given'})`;
  return `essh: ${who} forwarded a port to ${target}: ${d.bytes_to_target} bytes sent, ${d.bytes_from_target} received, ${d.duration_s} s`;
}

/** A `file_transfer` event's one line (the drains' and the recording's timeline). */
export function transferText(d: TransferDetails): string {
  const who = `${d.user.name} <${d.user.email}>`;
  const what = d.direction === 'upload' ? 'uploaded' : 'downloaded';
  const as = d.container_user ? ` as ${d.container_user}` : '';
  const cut = d.interrupted ? ', interrupted' : '';
  return `essh: ${who} ${what} ${JSON.stringify(d.path)}${as}: ${d.bytes} bytes${cut}`;
}

/** A session's output is complete unless its `ended` record says otherwise. */
export function outputComplete(details: Record<string, unknown> | undefined): boolean {
  return (details as Lifecycle | undefined)?.output_complete !== false;
}

/** The event's one-line text: the output without its line ending, or a sentence for a lifecycle event. */
export function logText(e: ShippedEvent): string {
  if (e.kind === 'output') {
    const t = e.text ?? e.data?.toString('utf8') ?? '';
    if (t.endsWith('\r\n')) return t.slice(0, -2);
    if (t.endsWith('\n')) return t.slice(0, -1);
    return t;
  }
  const d = (e.details ?? {}) as Lifecycle;
  const id = e.session.operationId;
  if (e.kind === 'session_started') {
    const env = d.env_keys?.length ? `, extra env ${d.env_keys.join(', ')}` : '';
    const detached = d.detached ? ', detached' : '';
    return `essh: session ${id} started by ${e.session.userName} <${e.session.userEmail}> on app ${e.session.app} (container ${d.container_size_mb} MB${env}${detached})`;
  }
  if (e.kind === 'port_forward') return forwardText(e.details as unknown as ForwardDetails);
  if (e.kind === 'file_transfer') return transferText(e.details as unknown as TransferDetails);
  if (e.kind === 'session_observed') return observerText(e.details as unknown as ObserverDetails);
  if (e.kind === 'output_truncated') {
    return `essh: session ${id} printed more than its output journal may hold: output after byte ${d.after_bytes ?? e.offset} ` +
      'reached the terminal but not the drains or the recording';
  }
  const exit = d.exit_code !== null && d.exit_code !== undefined ? `, exit code ${d.exit_code}` : '';
  const by = d.ended_by ? `, by ${d.ended_by}` : '';
  const incomplete = outputComplete(e.details) ? '' : '; the output shipped is incomplete';
  return `essh: session ${id} ended: ${d.end_reason}${by}${exit}, after ${d.duration_s} s${incomplete}`;
}

/** The fields a lifecycle event adds to the shared ones. */
function lifecycleFields(e: ShippedEvent): Record<string, unknown> {
  const d = (e.details ?? {}) as Lifecycle;
  if (e.kind === 'session_started') {
    return { event: e.kind, container_size_mb: d.container_size_mb, command: d.command ?? null, ...(d.env_keys?.length ? { env_keys: d.env_keys } : {}),
      ...(d.detached ? { detached: true } : {}) };
  }
  if (e.kind === 'output_truncated') return { event: e.kind, after_bytes: d.after_bytes ?? e.offset };
  if (e.kind === 'port_forward') {
    const f = e.details as unknown as ForwardDetails;
    return {
      event: e.kind, forwarded_by: f.user?.email ?? null, target_host: f.target_host, target_port: f.target_port, connected: f.connected,
      ...(f.error ? { error: f.error } : {}), bytes_to_target: f.bytes_to_target, bytes_from_target: f.bytes_from_target, duration_s: f.duration_s,
    };
  }
  if (e.kind === 'file_transfer') {
    const t = e.details as unknown as TransferDetails;
    return {
      event: e.kind, transferred_by: t.user?.email ?? null, path: t.path, direction: t.direction, bytes: t.bytes,
      ...(t.container_user ? { container_user: t.container_user } : {}), ...(t.interrupted ? { interrupted: true } : {}),
    };
  }
  if (e.kind === 'session_observed') {
    const o = e.details as unknown as ObserverDetails;
    return {
      event: e.kind, observer_action: o.event, observed_by: o.user?.email ?? null, observer_name: o.user?.name ?? null, observer_role: o.role,
      observer_address: o.address, observer_credential: o.credential, joined_at: o.joined_at,
      ...(o.duration_s !== undefined ? { duration_s: o.duration_s } : {}),
    };
  }
  return {
    event: e.kind, end_reason: d.end_reason, end_message: d.end_message ?? null, ended_by: d.ended_by ?? null,
    exit_code: d.exit_code ?? null, duration_s: d.duration_s, output_complete: outputComplete(e.details),
    ...(d.detached ? { detached: true } : {}),
  };
}

/** The HTTPS (and Elasticsearch document) JSON of an event, as text. */
export function jsonEventText(e: ShippedEvent): string {
  let s = `{"@timestamp":"${e.time}","time":"${e.time}","log":${JSON.stringify(logText(e))},"stream":"${e.stream}",` +
    `${e.session.jsonFragment},"offset":${e.offset},"seq":${e.seq}`;
  if (e.kind !== 'output') s += `,${JSON.stringify(lifecycleFields(e)).slice(1, -1)}`;
  return s + '}';
}

/** The HTTPS (and Elasticsearch document) shape of an event. */
export function jsonEvent(e: ShippedEvent): Record<string, unknown> {
  return JSON.parse(jsonEventText(e)) as Record<string, unknown>;
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
  const s = e.session;
  const pri = e.kind === 'output' ? PRI_USER_INFO : PRI_USER_NOTICE;
  const header = `<${pri}>1 ${e.time} ${headerField(s.host, 255)} ${headerField(s.app, 48)} ${headerField(String(s.operationId), 128)} ${headerField(e.kind, 32)} `;
  const prefix = token ? `${token} ` : '';
  const text = Buffer.from(prefix + logText(e), 'utf8');
  const extra = e.kind === 'session_ended' ? ` output_complete="${outputComplete(e.details)}"` : '';
  const sd = (part: number, parts: number) =>
    `[essh@32473 operation_id="${s.operationId}" user_name="${sdEscape(s.userName)}" user_email="${sdEscape(s.userEmail)}"` +
    ` seq="${e.seq}" offset="${e.offset}"${extra}${parts > 1 ? ` part="${part}/${parts}"` : ''}]`;
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
  return indexOf(pattern, e.time, e.session.app, e.session.account);
}

function indexOf(pattern: string, time: string, app: string, account: string): string {
  const d = time.slice(0, 10).split('-');
  return pattern
    .replaceAll('{yyyy}', d[0] ?? '')
    .replaceAll('{MM}', d[1] ?? '')
    .replaceAll('{dd}', d[2] ?? '')
    .replaceAll('{app}', app)
    .replaceAll('{account}', account);
}

export const esDocumentId = (e: ShippedEvent) => `${e.session.operationId}:${e.seq}`;

export function bulkBody(events: readonly ShippedEvent[], pattern: string): string {
  const parts: string[] = [];
  for (const e of events) {
    parts.push(`{"create":{"_index":${JSON.stringify(indexName(pattern, e))},"_id":"${esDocumentId(e)}"}}\n`, jsonEventText(e), '\n');
  }
  return parts.join('');
}

/** The HTTPS drain's body: a JSON array of events. */
export function httpsBody(events: readonly ShippedEvent[]): Buffer {
  const w = new JsonWriter(events.length * 512 + 64);
  w.byte(0x5b); // [
  for (let i = 0; i < events.length; i++) {
    if (i) w.byte(0x2c); // ,
    const e = events[i]!;
    if (e.kind === 'output') w.outputEvent(e);
    else w.text(jsonEventText(e));
  }
  w.byte(0x5d); // ]
  return w.done();
}

const OPEN_TIME = Buffer.from('{"@timestamp":"');
const MID_TIME = Buffer.from('","time":"');
const OPEN_LOG = Buffer.from('","log":"');
const SEQ = Buffer.from(',"seq":');

/** Appends JSON into one growing Buffer. */
class JsonWriter {
  private buf: Buffer;
  private at = 0;

  constructor(capacity: number) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  private room(n: number) {
    if (this.at + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
  }

  byte(b: number) {
    this.room(1);
    this.buf[this.at++] = b;
  }

  bytes(b: Uint8Array, start = 0, end = b.length) {
    this.room(end - start);
    this.buf.set(start === 0 && end === b.length ? b : b.subarray(start, end), this.at);
    this.at += end - start;
  }

  ascii(s: string) {
    this.room(s.length);
    this.at += this.buf.write(s, this.at, 'latin1');
  }

  text(s: string) {
    this.room(s.length * 3);
    this.at += this.buf.write(s, this.at, 'utf8');
  }

  uint(n: number) {
    if (n < 0 || !Number.isSafeInteger(n)) return this.ascii(String(n));
    let digits = 1;
    for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
    this.room(digits);
    let at = this.at + digits;
    this.at = at;
    let x = n;
    do {
      this.buf[--at] = 0x30 + (x % 10);
      x = Math.floor(x / 10);
    } while (x > 0);
  }

  private lastTime = '';
  private lastTimeBytes = Buffer.alloc(0);

  /** The event's time, twice; consecutive events mostly share it (one journal record), so its bytes are kept. */
  private time(time: string) {
    if (time !== this.lastTime) {
      this.lastTime = time;
      this.lastTimeBytes = Buffer.from(time, 'latin1');
    }
    this.bytes(OPEN_TIME);
    this.bytes(this.lastTimeBytes);
    this.bytes(MID_TIME);
    this.bytes(this.lastTimeBytes);
  }

  /** `{"@timestamp":…,"seq":N}` of an output event, its log copied as bytes when it is plain ASCII. */
  outputEvent(e: ShippedEvent) {
    this.time(e.time);
    this.bytes(OPEN_LOG);
    const d = e.data;
    let copied = false;
    if (e.text === null && d !== undefined) {
      let end = d.length;
      if (end && d[end - 1] === 0x0a) end -= end > 1 && d[end - 2] === 0x0d ? 2 : 1;
      // Copy while checking that every byte may stand in a JSON string as it is (printable ASCII, no " or \).
      this.room(end);
      const buf = this.buf;
      let at = this.at;
      let i = 0;
      for (; i < end; i++) {
        const c = d[i]!;
        if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) break;
        buf[at++] = c;
      }
      if (i === end) {
        this.at = at;
        copied = true;
      }
    }
    if (!copied) {
      const quoted = JSON.stringify(logText(e));
      this.text(quoted.slice(1, -1));
    }
    this.bytes(e.session.jsonTail[e.stream === 'stderr' ? 'stderr' : 'stdout']);
    this.uint(e.offset);
    this.bytes(SEQ);
    this.uint(e.seq);
    this.byte(0x7d); // }
  }

  done(): Buffer {
    return this.buf.subarray(0, this.at);
  }
}

// ---- audit events (services/audit.ts), shipped to the drains of their accounts ----

/** What an audit event is shipped as; `account` is the drain's account (an event may concern several). */
export interface ShippedAuditEvent {
  event: AuditEventView;
  account: string;
}

/** One sentence: who did what to which thing, from where. */
export function auditLogText(e: AuditEventView): string {
  const who = e.actor ? `${e.actor.name} <${e.actor.email}> (${e.actor.role})` : 'essh';
  const target = `${e.target.type} ${e.target.name ?? e.target.id}`;
  const fields = e.fields.length ? ` (${e.fields.join(', ')})` : '';
  return `essh audit: ${who} ${e.action.slice(e.action.indexOf('.') + 1)} ${target}${fields}${e.source_address ? ` from ${e.source_address}` : ''}`;
}

/** The HTTPS (and Elasticsearch document) shape of an audit event: the session events' time and log fields, then the audit's. */
export function auditEventJson({ event: e, account }: ShippedAuditEvent): Record<string, unknown> {
  return {
    '@timestamp': e.at, time: e.at, log: auditLogText(e), stream: 'audit', layer: 'api', source: 'audit', account, event: 'audit',
    audit_id: e.id, action: e.action, actor_id: e.actor?.id ?? null, actor_name: e.actor?.name ?? null, actor_email: e.actor?.email ?? null,
    actor_role: e.actor?.role ?? null, source_address: e.source_address, target_type: e.target.type, target_id: e.target.id,
    target_name: e.target.name, fields: e.fields, details: e.details,
  };
}

/** An audit event as one RFC 5424 message (APP-NAME essh-audit, MSGID the action), octet-count framed; a long text is cut. */
export function auditSyslogFrame({ event: e }: ShippedAuditEvent, token: string | null): Buffer {
  const header = `<${PRI_USER_NOTICE}>1 ${e.at} essh essh-audit ${e.id} ${headerField(e.action, 32)} `;
  const sd = `[essh-audit@32473 audit_id="${e.id}" actor_email="${sdEscape(e.actor?.email ?? '')}" target_type="${e.target.type}"` +
    ` target_id="${sdEscape(e.target.id)}" source_address="${sdEscape(e.source_address ?? '')}"]`;
  const head = Buffer.from(`${header}${sd} ${token ? `${token} ` : ''}`, 'utf8');
  const text = Buffer.from(`${auditLogText(e)} ${JSON.stringify(e.details)}`, 'utf8');
  const msg = Buffer.concat([head, text.subarray(0, utf8Boundary(text, Math.max(256, SYSLOG_MAX_MESSAGE_BYTES - head.length)))]);
  return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
}

/** `_bulk` of audit events: `create` with `_id` audit-<id>, so that a retried batch counts as delivered (409). */
export function auditBulkBody(events: readonly ShippedAuditEvent[], pattern: string): string {
  return events.map((e) => `{"create":{"_index":${JSON.stringify(indexOf(pattern, e.event.at, 'audit', e.account))},"_id":"audit-${e.event.id}"}}\n` +
    `${JSON.stringify(auditEventJson(e))}\n`).join('');
}
