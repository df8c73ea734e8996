import { X509Certificate } from 'node:crypto';

import type { Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { CAPS, insertWithinCap } from '../domain/caps.js';
import type { SecretBox } from '../lib/secrets.js';
import { access, type Principal } from '../services/auth.js';
import { conflict, invalid, notFound } from '../services/errors.js';
import { pageOf, type PageRequest } from '../services/pages.js';
import { recordAudit } from '../services/audit.js';
import { REDACTION_PRESETS, RULE_LIMITS, WORST_CASE_BYTES } from '../redaction/redaction.js';
import { MAX_PATTERN_LENGTH, type DrainStatus, type DrainType } from '../shapes/enumerations.js';
import type { DrainBody, RedactionRuleBody } from '../shapes/requests.js';
import { Redactor } from '../redaction/redaction-pool.js';
import { checkDrainTarget, displayUrl } from './targets.js';
import type { Kysely, Selectable } from 'kysely';
import type { LogDrainsTable, RedactionRulesTable } from './tables.js';


const isUniqueViolation = (err: unknown) => /UNIQUE constraint|duplicate key value/i.test(String((err as Error)?.message ?? ''));

/** Checks a drain's settings by type; every refusal says what to send instead. */
export function validateDrain(input: DrainBody): void {
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

/** What the hosts have not yet delivered to each drain (journal bytes, and sessions), summed over hosts. */
export async function drainBacklogs(db: Db, drainIds?: number[]): Promise<Map<number, { bytes: number; sessions: number }>> {
  let q = db.selectFrom('drain_host_backlogs').select((eb) => [
    'drain_id', eb.fn.sum<number>('backlog_bytes').as('bytes'), eb.fn.sum<number>('backlog_sessions').as('sessions'),
  ]).groupBy('drain_id');
  if (drainIds) {
    if (!drainIds.length) return new Map();
    q = q.where('drain_id', 'in', drainIds);
  }
  const rows = await q.execute();
  return new Map(rows.map((r) => [Number(r.drain_id), { bytes: Number(r.bytes ?? 0), sessions: Number(r.sessions ?? 0) }]));
}

/** Log drains and redaction rules: who may do what, and the views the API returns. */
export class DrainsService {
  private readonly redactor: Redactor;

  constructor(
    private readonly db: Db,
    private readonly secrets: SecretBox,
    private readonly opts: { allowPrivateTargets?: boolean } = {},
  ) {
    this.redactor = new Redactor(db);
  }

  private async account(p: Principal, handle: string) {
    const a = await this.db.selectFrom('accounts').select(['id', 'handle']).where('handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.id))) throw notFound(`Account "${handle}"`);
    return { id: Number(a.id), handle: a.handle };
  }

  private async drainView(p: Principal, d: Selectable<LogDrainsTable>, accountHandle: string, backlogs?: Map<number, { bytes: number; sessions: number }>) {
    const backlog = (backlogs ?? (await drainBacklogs(this.db, [Number(d.id)]))).get(Number(d.id)) ?? { bytes: 0, sessions: 0 };
    return {
      id: Number(d.id), handle: d.handle, account: accountHandle, drain_type: d.drain_type, url: displayUrl(this.secrets.open(d.url)),
      has_token: d.token !== null, has_ca_cert: d.ca_cert !== null,
      index: d.index_pattern, pipeline: d.pipeline,
      drain_ephemeral_sessions: Boolean(d.drain_ephemeral_sessions),
      status: d.status as DrainStatus,
      paused_reason: d.paused_reason,
      paused_at: d.paused_at,
      created_at: d.created_at,
      delivery: {
        backlog_bytes: d.drain_ephemeral_sessions ? backlog.bytes : 0,
        backlog_sessions: d.drain_ephemeral_sessions ? backlog.sessions : 0,
        delivered_events: Number(d.delivered_events),
        failed_events: Number(d.failed_events),
        last_success_at: d.last_success_at,
        last_error_at: d.last_error_at,
        last_error: d.last_error,
        last_error_status: d.last_error_status === null ? null : Number(d.last_error_status),
        // The receiver's own words may echo anything (its internals, our request): operators only.
        ...(access.isOperator(p) ? { last_error_detail: d.last_error_detail } : {}),
      },
    };
  }

  async create(p: Principal, accountHandle: string, input: DrainBody) {
    const account = await this.account(p, accountHandle);
    access.requireAccountAdmin(p, account.id, `Account "${accountHandle}"`);
    validateDrain(input);
    try {
      await checkDrainTarget(new URL(input.url), this.opts.allowPrivateTargets ?? false);
    } catch (err) {
      throw invalid(`url: ${(err as Error).message}.`);
    }
    // A new drain starts with the events that come after it was created (the shippers compare times).
    const cap = CAPS.drainsPerAccount;
    try {
      const row = await insertWithinCap(this.db, { table: 'accounts', id: account.id }, cap,
        async (trx) => Number((await trx.selectFrom('log_drains').select((eb) => eb.fn.countAll<number>().as('n'))
          .where('account_id', '=', account.id).executeTakeFirstOrThrow()).n),
        () => conflict(`Account "${accountHandle}" already has ${cap} log drains, the most an account may have; delete one it no longer uses.`),
        async (trx) => drainCreated(trx, p, await trx.insertInto('log_drains').values({
        account_id: account.id, handle: input.handle, drain_type: input.drain_type, url: this.secrets.seal(input.url),
        token: input.token === undefined ? null : this.secrets.seal(input.token), ca_cert: input.ca_cert ?? null, index_pattern: input.index ?? null, pipeline: input.pipeline ?? null,
        drain_ephemeral_sessions: input.drain_ephemeral_sessions === false ? 0 : 1,
        delivered_events: 0, failed_events: 0, paused_reason: null, paused_at: null,
        last_success_at: null, last_error_at: null, last_error: null, last_error_status: null, last_error_detail: null, created_at: nowIso(),
      }).returningAll().executeTakeFirstOrThrow(), input));
      return this.drainView(p, row, account.handle);
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`Account "${accountHandle}" already has a drain "${input.handle}"; pick another handle or delete that one.`);
      throw err;
    }
  }

  async list(p: Principal, accountHandle: string, page: PageRequest) {
    const account = await this.account(p, accountHandle);
    let q = this.db.selectFrom('log_drains').selectAll().where('account_id', '=', account.id).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    const rows = await q.execute();
    const backlogs = await drainBacklogs(this.db, rows.slice(0, page.limit).map((r) => Number(r.id)));
    return pageOf(rows, page, (r) => Number(r.id), (r) => this.drainView(p, r, account.handle, backlogs));
  }

  private async drainRow(p: Principal, id: number) {
    const row = await this.db.selectFrom('log_drains').innerJoin('accounts', 'accounts.id', 'log_drains.account_id')
      .selectAll('log_drains').select('accounts.handle as account_handle').where('log_drains.id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeAccount(p, Number(row.account_id))) throw notFound(`Log drain ${id}`);
    return row;
  }

  async get(p: Principal, id: number) {
    const row = await this.drainRow(p, id);
    return this.drainView(p, row, row.account_handle);
  }

  /** The batches a drain refused for good, most recent first, one page at a time. */
  async failures(p: Principal, id: number, page: PageRequest) {
    await this.drainRow(p, id);
    let q = this.db.selectFrom('log_drain_failures').selectAll().where('drain_id', '=', id).orderBy('id', 'desc').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '<', page.after);
    const num = (v: number | null) => (v === null ? null : Number(v));
    return pageOf(await q.execute(), page, (r) => Number(r.id), (r) => ({
      id: Number(r.id), operation_id: num(r.operation_id), first_seq: num(r.first_seq), last_seq: num(r.last_seq),
      events: Number(r.events), status: num(r.status), message: r.message, at: r.at,
      ...(access.isOperator(p) ? { detail: r.detail } : {}),
    }));
  }

  /**
   * Resumes a paused drain (once its receiver or credentials are fixed): the hosts deliver again from
   * where each session's cursor stopped, so nothing from the pause is lost.
   */
  async resume(p: Principal, id: number) {
    const row = await this.drainRow(p, id);
    access.requireAccountAdmin(p, Number(row.account_id), `Log drain ${id}`);
    await this.db.transaction().execute(async (tx) => {
      await tx.updateTable('log_drains').set({ status: 'active', paused_reason: null, paused_at: null }).where('id', '=', id).execute();
      await recordAudit(tx, p, {
        action: 'log_drain.resumed', target: { id, name: row.handle }, accountIds: [Number(row.account_id)], fields: ['status'],
        details: { from: row.status, paused_reason: row.paused_reason },
      });
    });
    return this.get(p, id);
  }

  async delete(p: Principal, id: number) {
    const row = await this.drainRow(p, id);
    access.requireAccountAdmin(p, Number(row.account_id), `Log drain ${id}`);
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('log_drain_failures').where('drain_id', '=', id).execute();
      await tx.deleteFrom('log_drains').where('id', '=', id).execute();
      await recordAudit(tx, p, {
        action: 'log_drain.deleted', target: { id, name: row.handle }, accountIds: [Number(row.account_id)],
        details: { drain_type: row.drain_type, url: displayUrl(this.secrets.open(row.url)) },
      });
    });
  }

  // --- redaction rules --------------------------------------------------------------------------
  private ruleView(r: Selectable<RedactionRulesTable>, account: string) {
    return {
      id: Number(r.id), account, name: r.name, pattern: r.pattern, preset: r.preset, replacement: r.replacement, created_at: r.created_at,
      status: r.status, last_error: r.last_error, last_error_at: r.last_error_at, withheld_records: Number(r.withheld_records),
    };
  }

  async createRule(p: Principal, accountHandle: string, input: RedactionRuleBody) {
    const account = await this.account(p, accountHandle);
    access.requireAccountAdmin(p, account.id, `Account "${accountHandle}"`);
    if ((input.pattern === undefined) === (input.preset === undefined)) {
      throw invalid(`Send either "pattern" (a regular expression) or "preset" (one of ${Object.keys(REDACTION_PRESETS).join(', ')}), not both and not neither.`);
    }
    const preset = input.preset ? REDACTION_PRESETS[input.preset] : undefined;
    const pattern = input.pattern ?? preset!.pattern;
    const replacement = input.replacement ?? preset?.replacement ?? '[REDACTED]';
    if (pattern.length > MAX_PATTERN_LENGTH) throw invalid(`"pattern" may be at most ${MAX_PATTERN_LENGTH} characters.`);
    const cap = CAPS.redactionRulesPerAccount;
    const refuseCap = () => conflict(`Account "${accountHandle}" already has ${cap} redaction rules, the most an account may have ` +
      '(each one is applied to every line of output); delete one, or combine two patterns with "|".');
    const count = async (db: Db) => Number((await db.selectFrom('redaction_rules').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('account_id', '=', account.id).executeTakeFirstOrThrow()).n);
    // Before any work on the pattern; the insert counts again, in its transaction.
    if ((await count(this.db)) >= cap) throw refuseCap();
    if (!preset) await this.checkRuleCost(account.id, pattern);
    const row = await insertWithinCap(this.db, { table: 'accounts', id: account.id }, cap, count, refuseCap,
      async (trx) => {
        const row = await trx.insertInto('redaction_rules').values({
          account_id: account.id, name: input.name, pattern, preset: input.preset ?? null, replacement, created_at: nowIso(),
          last_error: null, last_error_at: null,
        }).returningAll().executeTakeFirstOrThrow();
        await recordAudit(trx, p, {
          action: 'redaction_rule.created', target: { id: row.id, name: row.name }, accountIds: [account.id], fields: Object.keys(input),
          details: { pattern, preset: row.preset, replacement },
        });
        return row;
      });
    return this.ruleView(row, account.handle);
  }

  /**
   * Refuses a pattern that is not RE2, matches the empty string, or costs too much: matching is linear in
   * the text but not in the pattern (redaction/redaction.ts), so its program size and its time on worst-case
   * output are bounded. Measured in the redaction workers: the API's event loop never runs the pattern.
   */
  private async checkRuleCost(accountId: number, pattern: string) {
    const cost = await this.redactor.measure(accountId, pattern, false);
    const simpler = 'use fewer or smaller counted repetitions ({n}), or split the rule in two';
    if ('syntaxError' in cost) {
      throw invalid(`"pattern" is not a valid regular expression in RE2 syntax (${cost.syntaxError}); write it without slashes or flags, ` +
        'and without lookaround or backreferences (https://github.com/google/re2/wiki/Syntax).');
    }
    if ('overBudget' in cost) {
      throw invalid(`"pattern" took longer than ${10 * RULE_LIMITS.recordBudgetMs} ms to check, far more than a rule may cost; ${simpler}.`);
    }
    if (cost.programSize > RULE_LIMITS.programSize) {
      throw invalid(`"pattern" compiles to ${cost.programSize} RE2 instructions, more than the ${RULE_LIMITS.programSize} a rule may have ` +
        `(each instruction costs every byte of output); ${simpler}.`);
    }
    if (cost.matchesEmpty) throw invalid('"pattern" matches the empty string, so it would redact nothing useful; make it match the secret itself.');
    if (cost.worstMs !== null && cost.worstMs > RULE_LIMITS.worstCaseMs) {
      throw invalid(`"pattern" took ${Math.round(cost.worstMs)} ms on ${WORST_CASE_BYTES / 1024} KB of the output that keeps it busiest, ` +
        `more than the ${RULE_LIMITS.worstCaseMs} ms a rule may take; ${simpler}.`);
    }
  }

  async listRules(p: Principal, accountHandle: string, page: PageRequest) {
    const account = await this.account(p, accountHandle);
    let q = this.db.selectFrom('redaction_rules').selectAll().where('account_id', '=', account.id).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (r) => Number(r.id), (r) => this.ruleView(r, account.handle));
  }

  async deleteRule(p: Principal, id: number) {
    const row = await this.db.selectFrom('redaction_rules').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeAccount(p, Number(row.account_id))) throw notFound(`Redaction rule ${id}`);
    access.requireAccountAdmin(p, Number(row.account_id), `Redaction rule ${id}`);
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('redaction_rules').where('id', '=', id).execute();
      await recordAudit(tx, p, {
        action: 'redaction_rule.deleted', target: { id, name: row.name }, accountIds: [Number(row.account_id)],
        details: { pattern: row.pattern, preset: row.preset },
      });
    });
  }
}

/** The audit event of a new drain, in its insert's transaction: its settings, credentials masked or only said to be there. */
async function drainCreated<R extends Selectable<LogDrainsTable>>(trx: Kysely<Database>, p: Principal, row: R, input: DrainBody): Promise<R> {
  await recordAudit(trx, p, {
    action: 'log_drain.created', target: { id: row.id, name: row.handle }, accountIds: [Number(row.account_id)], fields: Object.keys(input),
    details: {
      drain_type: row.drain_type, url: displayUrl(input.url), has_token: input.token !== undefined, has_ca_cert: input.ca_cert !== undefined,
      index: row.index_pattern, pipeline: row.pipeline, drain_ephemeral_sessions: Boolean(row.drain_ephemeral_sessions),
    },
  });
  return row;
}
