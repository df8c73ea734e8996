import { X509Certificate } from 'node:crypto';
import type { Readable } from 'node:stream';

import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { access, type Principal } from '../services/auth.js';
import { ApiError, conflict, invalid, notFound } from '../services/errors.js';
import safeRegex from 'safe-regex2';
import { asciicast } from './recording.js';
import { REDACTION_PRESETS, compileRule, type RedactionPreset } from './redaction.js';
import type { Selectable } from 'kysely';
import type { LogDrainsTable } from './tables.js';

export const DRAIN_TYPES = ['https', 'syslog', 'elasticsearch'] as const;
export type DrainType = (typeof DRAIN_TYPES)[number];

export interface DrainInput {
  handle: string;
  drain_type: DrainType;
  url: string;
  token?: string;
  ca_cert?: string;
  index?: string;
  pipeline?: string;
  drain_ephemeral_sessions?: boolean;
}
export interface RedactionRuleInput {
  name: string;
  pattern?: string;
  preset?: RedactionPreset;
  replacement?: string;
}

const isUniqueViolation = (err: unknown) => /UNIQUE constraint|duplicate key value/i.test(String((err as Error)?.message ?? ''));

/** The URL as shown back: a password in it is never echoed. */
function displayUrl(raw: string): string {
  const u = new URL(raw);
  if (u.password) u.password = '****';
  return u.toString();
}

/** Checks a drain's settings by type; every refusal says what to send instead. */
export function validateDrain(input: DrainInput): void {
  let url: URL;
  try {
    url = new URL(input.url);
  } catch {
    throw invalid(`url "${input.url}" is not a URL; for a ${input.drain_type} drain send ${exampleUrl(input.drain_type)}.`);
  }
  if (input.drain_type === 'syslog') {
    if (url.protocol !== 'syslog+tls:') {
      throw invalid(`A syslog drain sends over TLS only: its url must look like syslog+tls://logs.example.com:6514 (got ${url.protocol}//…).`);
    }
    if (!url.hostname || !url.port) throw invalid('A syslog drain url needs a host and a port: syslog+tls://logs.example.com:6514.');
    if (url.pathname && url.pathname !== '/' && url.pathname !== '') throw invalid('A syslog drain url has no path: syslog+tls://host:port.');
    if (url.username || url.password) throw invalid('Put a syslog drain\'s credentials in "token" (sent before every line), not in the url.');
  } else {
    if (url.protocol !== 'https:') {
      throw invalid(`A ${input.drain_type} drain must use https (TLS); got ${url.protocol}//…. Send ${exampleUrl(input.drain_type)}.`);
    }
    if (!url.hostname) throw invalid(`url needs a host: ${exampleUrl(input.drain_type)}.`);
  }
  if (input.drain_type === 'elasticsearch') {
    if (!input.index) throw invalid('An elasticsearch drain needs "index": an index name or pattern such as "essh-{yyyy}.{MM}.{dd}".');
    const literal = input.index.replace(/\{(yyyy|MM|dd|app|account)\}/g, 'x');
    if (!/^[a-z0-9][a-z0-9._+-]*$/.test(literal) || literal.length > 255) {
      throw invalid('"index" must be a lower-case Elasticsearch index name (letters, digits, ".", "_", "-", "+"), optionally with {yyyy}, {MM}, {dd}, {app} or {account}.');
    }
    if (input.pipeline !== undefined && !/^[A-Za-z0-9._-]{1,255}$/.test(input.pipeline)) {
      throw invalid('"pipeline" must be an ingest pipeline name (letters, digits, ".", "_", "-").');
    }
  } else {
    if (input.index !== undefined) throw invalid('"index" applies to elasticsearch drains only; leave it out.');
    if (input.pipeline !== undefined) throw invalid('"pipeline" applies to elasticsearch drains only; leave it out.');
  }
  if (input.token !== undefined) {
    if (input.drain_type === 'https') throw invalid('An https drain takes no "token"; put credentials in the url (https://user:password@host/path).');
    if (!/^[\x21-\x7e]{1,1024}$/.test(input.token)) throw invalid('"token" must be 1–1024 printable ASCII characters without spaces.');
  }
  if (input.ca_cert !== undefined) {
    try {
      new X509Certificate(input.ca_cert);
    } catch {
      throw invalid('"ca_cert" is not a PEM certificate; send the CA certificate as "-----BEGIN CERTIFICATE-----…".');
    }
  }
}

function exampleUrl(type: DrainType): string {
  return type === 'syslog' ? 'syslog+tls://logs.example.com:6514'
    : type === 'elasticsearch' ? 'https://user:password@es.example.com:9200' : 'https://logs.example.com/ingest';
}

/**
 * Seals under the current secrets key the drain credentials stored in clear (before sealing existed)
 * or sealed under a previous key (a rotation); idempotent, run at start-up. Resolves with how many
 * drains it sealed again. A value that no key known here opens stops the start with the reason.
 */
export async function sealStoredDrainSecrets(db: Db, secrets: SecretBox): Promise<number> {
  const rows = await db.selectFrom('log_drains').select(['id', 'url', 'token']).execute();
  let resealed = 0;
  for (const r of rows) {
    if (!secrets.needsResealing(r.url) && (r.token === null || !secrets.needsResealing(r.token))) continue;
    const reseal = (v: string) => (secrets.needsResealing(v) ? secrets.seal(secrets.open(v)) : v);
    let sealed: { url: string; token: string | null };
    try {
      sealed = { url: reseal(r.url), token: r.token === null ? null : reseal(r.token) };
    } catch (err) {
      throw new Error(`log drain ${r.id}: ${(err as Error).message}`);
    }
    // Only if nobody changed the row meanwhile (another process sealing it at the same start).
    await db.updateTable('log_drains').set(sealed)
      .where('id', '=', r.id).where('url', '=', r.url)
      .where((eb) => (r.token === null ? eb('token', 'is', null) : eb('token', '=', r.token)))
      .execute();
    resealed++;
  }
  return resealed;
}

/** Events of the drain's account captured and not yet delivered to it. */
export async function drainBacklog(db: Db, d: Pick<Selectable<LogDrainsTable>, 'account_id' | 'cursor' | 'drain_ephemeral_sessions'>) {
  if (!d.drain_ephemeral_sessions) return 0;
  const { n } = await db.selectFrom('session_events').select((eb) => eb.fn.countAll<number>().as('n'))
    .where('account_id', '=', d.account_id).where('id', '>', d.cursor).executeTakeFirstOrThrow();
  return Number(n);
}

/** Log drains, redaction rules and recordings: who may do what, and the views the API returns. */
export class DrainsService {
  constructor(private readonly db: Db, private readonly secrets: SecretBox, private readonly retentionS = 0) {}

  private async account(p: Principal, handle: string) {
    const a = await this.db.selectFrom('accounts').select(['id', 'handle']).where('handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.id))) throw notFound(`Account "${handle}"`);
    return { id: Number(a.id), handle: a.handle };
  }

  private async drainView(d: Selectable<LogDrainsTable>, accountHandle: string) {
    return {
      id: Number(d.id), handle: d.handle, account: accountHandle, drain_type: d.drain_type, url: displayUrl(this.secrets.open(d.url)),
      has_token: d.token !== null, has_ca_cert: d.ca_cert !== null,
      index: d.index_pattern, pipeline: d.pipeline,
      drain_ephemeral_sessions: Boolean(d.drain_ephemeral_sessions),
      created_at: d.created_at,
      delivery: {
        backlog: await drainBacklog(this.db, d),
        delivered_events: Number(d.delivered_events),
        failed_events: Number(d.failed_events),
        last_success_at: d.last_success_at,
        last_error_at: d.last_error_at,
        last_error: d.last_error,
      },
    };
  }

  async create(p: Principal, accountHandle: string, input: DrainInput) {
    const account = await this.account(p, accountHandle);
    access.requireAccountAdmin(p, account.id, `Account "${accountHandle}"`);
    validateDrain(input);
    // A new drain starts with the events to come, not with the account's whole history.
    const max = await this.db.selectFrom('session_events').select((eb) => eb.fn.max('id').as('m')).executeTakeFirst();
    try {
      const row = await this.db.insertInto('log_drains').values({
        account_id: account.id, handle: input.handle, drain_type: input.drain_type, url: this.secrets.seal(input.url),
        token: input.token === undefined ? null : this.secrets.seal(input.token), ca_cert: input.ca_cert ?? null, index_pattern: input.index ?? null, pipeline: input.pipeline ?? null,
        drain_ephemeral_sessions: input.drain_ephemeral_sessions === false ? 0 : 1,
        cursor: Number(max?.m ?? 0), delivered_events: 0, failed_events: 0,
        last_success_at: null, last_error_at: null, last_error: null, lease_owner: null, lease_until: null, created_at: nowIso(),
      }).returningAll().executeTakeFirstOrThrow();
      return this.drainView(row, account.handle);
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`Account "${accountHandle}" already has a drain "${input.handle}"; pick another handle or delete that one.`);
      throw err;
    }
  }

  async list(p: Principal, accountHandle: string) {
    const account = await this.account(p, accountHandle);
    const rows = await this.db.selectFrom('log_drains').selectAll().where('account_id', '=', account.id).orderBy('id').execute();
    return Promise.all(rows.map((r) => this.drainView(r, account.handle)));
  }

  private async drainRow(p: Principal, id: number) {
    const row = await this.db.selectFrom('log_drains').innerJoin('accounts', 'accounts.id', 'log_drains.account_id')
      .selectAll('log_drains').select('accounts.handle as account_handle').where('log_drains.id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeAccount(p, Number(row.account_id))) throw notFound(`Log drain ${id}`);
    return row;
  }

  async get(p: Principal, id: number) {
    const row = await this.drainRow(p, id);
    return this.drainView(row, row.account_handle);
  }

  async failures(p: Principal, id: number) {
    await this.drainRow(p, id);
    const rows = await this.db.selectFrom('log_drain_failures').selectAll().where('drain_id', '=', id).orderBy('id', 'desc').limit(100).execute();
    return rows.map((r) => ({
      id: Number(r.id), first_event_id: Number(r.first_event_id), last_event_id: Number(r.last_event_id),
      events: Number(r.events), status: r.status === null ? null : Number(r.status), message: r.message, at: r.at,
    }));
  }

  async delete(p: Principal, id: number) {
    const row = await this.drainRow(p, id);
    access.requireAccountAdmin(p, Number(row.account_id), `Log drain ${id}`);
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('log_drain_failures').where('drain_id', '=', id).execute();
      await tx.deleteFrom('log_drains').where('id', '=', id).execute();
    });
  }

  // --- redaction rules --------------------------------------------------------------------------
  private ruleView(r: { id: number; name: string; pattern: string; preset: string | null; replacement: string; created_at: string }, account: string) {
    return { id: Number(r.id), account, name: r.name, pattern: r.pattern, preset: r.preset, replacement: r.replacement, created_at: r.created_at };
  }

  async createRule(p: Principal, accountHandle: string, input: RedactionRuleInput) {
    const account = await this.account(p, accountHandle);
    access.requireAccountAdmin(p, account.id, `Account "${accountHandle}"`);
    if ((input.pattern === undefined) === (input.preset === undefined)) {
      throw invalid(`Send either "pattern" (a regular expression) or "preset" (one of ${Object.keys(REDACTION_PRESETS).join(', ')}), not both and not neither.`);
    }
    const preset = input.preset ? REDACTION_PRESETS[input.preset] : undefined;
    const pattern = input.pattern ?? preset!.pattern;
    const replacement = input.replacement ?? preset?.replacement ?? '[REDACTED]';
    let compiled;
    try {
      compiled = compileRule({ pattern, replacement, preset: input.preset ?? null });
    } catch (err) {
      throw invalid(`"pattern" is not a valid regular expression (${(err as Error).message}); write it in JavaScript syntax, without slashes or flags.`);
    }
    if (compiled.regex.test('')) throw invalid('"pattern" matches the empty string, so it would redact nothing useful; make it match the secret itself.');
    // Every byte of every session of the account goes through these patterns: one that can backtrack
    // exponentially would stall the capture. safe-regex2 (fastify's) flags repetition nested in
    // repetition; it errs on the safe side, and the presets (checked by hand) are exempt.
    if (!preset && !safeRegex(pattern)) {
      throw invalid(
        `"pattern" nests a repetition inside another (as in (a+)+), which can take exponential time on some output; ` +
          'rewrite it so that no repeated group itself repeats, e.g. [a-z0-9]+ instead of ([a-z]+[0-9]*)+.',
      );
    }
    const row = await this.db.insertInto('redaction_rules').values({
      account_id: account.id, name: input.name, pattern, preset: input.preset ?? null, replacement, created_at: nowIso(),
    }).returningAll().executeTakeFirstOrThrow();
    return this.ruleView(row, account.handle);
  }

  async listRules(p: Principal, accountHandle: string) {
    const account = await this.account(p, accountHandle);
    const rows = await this.db.selectFrom('redaction_rules').selectAll().where('account_id', '=', account.id).orderBy('id').execute();
    return rows.map((r) => this.ruleView(r, account.handle));
  }

  async deleteRule(p: Principal, id: number) {
    const row = await this.db.selectFrom('redaction_rules').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeAccount(p, Number(row.account_id))) throw notFound(`Redaction rule ${id}`);
    access.requireAccountAdmin(p, Number(row.account_id), `Redaction rule ${id}`);
    await this.db.deleteFrom('redaction_rules').where('id', '=', id).execute();
  }

  // --- recordings -------------------------------------------------------------------------------
  async recording(p: Principal, operationId: number): Promise<Readable> {
    const op = await this.db.selectFrom('operations').innerJoin('apps', 'apps.id', 'operations.app_id')
      .select(['operations.account_id', 'operations.user_id', 'operations.created_at', 'operations.ended_at', 'apps.handle as app'])
      .where('operations.id', '=', operationId).executeTakeFirst();
    if (!op || !access.canSeeSession(p, { account_id: Number(op.account_id), user_id: Number(op.user_id) })) {
      throw notFound(`Session ${operationId}`);
    }
    if (this.retentionS > 0 && op.ended_at && Date.parse(op.ended_at) < Date.now() - this.retentionS * 1000) {
      throw new ApiError(410, 'gone', `The recording of session ${operationId} was deleted: session output is kept for ` +
        `${formatDuration(this.retentionS)} after a session ends (ESSH_EVENT_RETENTION_S).`);
    }
    return asciicast(this.db, { operationId, app: op.app, createdAt: op.created_at });
  }
}

function formatDuration(s: number): string {
  if (s % 86400 === 0) return `${s / 86400} day${s === 86400 ? '' : 's'}`;
  if (s % 3600 === 0) return `${s / 3600} hour${s === 3600 ? '' : 's'}`;
  return `${s} s`;
}
