import { createHash, randomUUID } from 'node:crypto';
import https from 'node:https';
import type { Selectable } from 'kysely';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { auditEventView, onAuditRecorded } from '../services/audit.js';
import { auditBulkBody, auditEventJson, auditSyslogFrame, type ShippedAuditEvent } from './formats.js';
import { runPasses } from './passes.js';
import { backoffDelay, pauseDrain, recordDrainError } from './shipper.js';
import type { LogDrainsTable } from './tables.js';
import { isForbiddenTarget, targetHost } from './targets.js';
import { classifyStatus, httpsPost, syslogTlsSend, type Outcome } from './transports.js';

export interface AuditShipperSettings {
  /** Most audit events per delivery request (halved on a 413). */
  batchEvents: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** How often it looks for events that no wake-up announced (another API process wrote them). */
  pollMs: number;
  allowPrivateTargets: boolean;
}

const DEFAULTS: AuditShipperSettings = { batchEvents: 500, backoffBaseMs: 500, backoffCapMs: 60_000, pollMs: 1000, allowPrivateTargets: false };
/** One process sends a drain its audit events at a time; a lease not renewed this long is taken over. */
const LEASE_MS = 30_000;
/**
 * An event is sent once it is this old: ids are handed out at insert and a transaction that took a
 * lower id may commit after one with a higher id (PostgreSQL), which a cursor past it would skip.
 * The audited transactions are a few statements long.
 */
const SETTLE_MS = 1000;

interface Deps {
  db: Db;
  log: Logger;
  secrets: SecretBox;
  settings?: Partial<AuditShipperSettings>;
}

/** A drain as this shipper reads it: its target (url and token still sealed) and its account's handle. */
type DrainRow = Pick<Selectable<LogDrainsTable>, 'drain_type' | 'url' | 'token' | 'ca_cert' | 'index_pattern' | 'pipeline' | 'created_at'>
  & { id: number; account_id: number; account: string };

/**
 * Ships the audit trail (services/audit.ts) to the log drains of the accounts each event concerns, at
 * least once and in id order per drain, where session lifecycle events go (drains that take session
 * events); events with no account (an operator's stack) go to no tenant's drain. Runs in the API
 * processes; a lease per drain (drain_audit_cursors) keeps two of them from sending the same events.
 */
export class AuditShipper {
  private readonly s: AuditShipperSettings;
  private readonly owner = randomUUID();
  private readonly busy = new Set<number>();
  /** Per drain: failed attempts in a row, when it may be tried again, and its batch size. */
  private readonly state = new Map<number, { attempt: number; notBefore: number; limit: number }>();
  private readonly agent = new https.Agent({ keepAlive: true, maxSockets: 4 });
  private stopPasses?: () => void;
  private stopped = false;
  private passes = new Set<Promise<void>>();

  constructor(private readonly deps: Deps) {
    this.s = { ...DEFAULTS, ...deps.settings };
  }

  start(): void {
    this.stopPasses = runPasses(() => this.tick(), this.s.pollMs, (news) => onAuditRecorded(() => setTimeout(news, SETTLE_MS).unref()));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopPasses?.();
    this.agent.destroy();
    await Promise.allSettled([...this.passes]);
    await this.deps.db.updateTable('drain_audit_cursors').set({ lease_owner: null, lease_until: null })
      .where('lease_owner', '=', this.owner).execute().catch(() => undefined);
  }

  private tick(): void {
    if (this.stopped) return;
    const pass = this.drainsWithWork().then(async (drains) => {
      for (const d of drains) {
        const st = this.state.get(d.id);
        if (this.busy.has(d.id) || (st && st.notBefore > Date.now())) continue;
        this.busy.add(d.id);
        const p = this.pass(d).catch((err) => this.deps.log.warn({ err, drain: d.id }, 'shipping audit events failed'))
          .finally(() => {
            this.busy.delete(d.id);
            this.passes.delete(p);
          });
        this.passes.add(p);
      }
    }).catch((err) => this.deps.log.warn({ err }, 'looking for audit events to ship failed'));
    this.passes.add(pass);
    void pass.finally(() => this.passes.delete(pass));
  }

  /** Active drains that take session events and whose account has audit events past their cursor. */
  private async drainsWithWork(): Promise<DrainRow[]> {
    const settled = new Date(Date.now() - SETTLE_MS).toISOString();
    const rows = await this.deps.db.selectFrom('log_drains as d')
      .innerJoin('accounts as a', 'a.id', 'd.account_id')
      .leftJoin('drain_audit_cursors as c', 'c.drain_id', 'd.id')
      .select(['d.id', 'd.account_id', 'a.handle as account', 'd.drain_type', 'd.url', 'd.token', 'd.ca_cert', 'd.index_pattern', 'd.pipeline', 'd.created_at'])
      .where('d.status', '=', 'active').where('d.drain_ephemeral_sessions', '=', 1)
      .where((eb) => eb.exists(eb.selectFrom('audit_event_accounts as ea').innerJoin('audit_events as e', 'e.id', 'ea.event_id')
        .select('e.id')
        .whereRef('ea.account_id', '=', 'd.account_id')
        .where((w) => w('e.id', '>', w.fn.coalesce('c.last_event_id', w.lit(0))))
        .whereRef('e.at', '>=', 'd.created_at')
        .where('e.at', '<=', settled)))
      .execute();
    return rows.map((r) => ({ ...r, id: Number(r.id), account_id: Number(r.account_id) }));
  }

  private async lease(drainId: number): Promise<number | undefined> {
    const now = nowIso();
    await this.deps.db.insertInto('drain_audit_cursors').values({ drain_id: drainId, last_event_id: 0, lease_owner: null, lease_until: null, updated_at: now })
      .onConflict((oc) => oc.column('drain_id').doNothing()).execute();
    const res = await this.deps.db.updateTable('drain_audit_cursors')
      .set({ lease_owner: this.owner, lease_until: new Date(Date.now() + LEASE_MS).toISOString() })
      .where('drain_id', '=', drainId)
      .where((eb) => eb.or([eb('lease_owner', 'is', null), eb('lease_owner', '=', this.owner), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) return undefined;
    const c = await this.deps.db.selectFrom('drain_audit_cursors').select('last_event_id').where('drain_id', '=', drainId).executeTakeFirstOrThrow();
    return Number(c.last_event_id);
  }

  /** Sends the drain its next batch of audit events and moves its cursor once the receiver settled it. */
  private async pass(d: DrainRow): Promise<void> {
    const cursor = await this.lease(d.id);
    if (cursor === undefined) return;
    const st = this.state.get(d.id) ?? { attempt: 0, notBefore: 0, limit: this.s.batchEvents };
    this.state.set(d.id, st);
    const settled = new Date(Date.now() - SETTLE_MS).toISOString();
    const rows = await this.deps.db.selectFrom('audit_events as e').innerJoin('audit_event_accounts as ea', 'ea.event_id', 'e.id')
      .selectAll('e').where('ea.account_id', '=', d.account_id).where('e.id', '>', cursor)
      .where('e.at', '>=', d.created_at).where('e.at', '<=', settled)
      .orderBy('e.id').limit(st.limit).execute();
    if (!rows.length) return;
    const events: ShippedAuditEvent[] = rows.map((r) => ({ event: auditEventView({ ...r, id: Number(r.id) }, [d.account]), account: d.account }));
    const first = events[0]!.event.id;
    const last = events[events.length - 1]!.event.id;
    const outcome = await this.deliver(d, events, first, last);
    switch (outcome.kind) {
      case 'ok':
      case 'permanent':
        await this.settle(d.id, last, events.length, outcome, `audit events ${first}–${last}`);
        Object.assign(st, { attempt: 0, notBefore: 0, limit: Math.min(this.s.batchEvents, st.limit * 2) });
        // More may be waiting: the next tick takes it.
        return;
      case 'too_large':
        if (events.length > 1) {
          st.limit = Math.max(1, Math.floor(events.length / 2));
          return;
        }
        await this.settle(d.id, last, 1, { ...outcome, kind: 'permanent', message: `${outcome.message}, even for a single event` }, `audit event ${first}`);
        return;
      case 'pause':
        await pauseDrain(this.deps.db, this.deps.log, d.id, outcome);
        return;
      case 'retry':
        st.attempt++;
        st.notBefore = Date.now() + Math.min(this.s.backoffCapMs, Math.max(outcome.retryAfterMs ?? 0,
          backoffDelay(st.attempt, this.s.backoffBaseMs, this.s.backoffCapMs)));
        await recordDrainError(this.deps.db, d.id, outcome);
    }
  }

  private async deliver(d: DrainRow, events: ShippedAuditEvent[], first: number, last: number): Promise<Outcome> {
    const url = new URL(this.deps.secrets.open(d.url));
    const token = d.token === null ? null : this.deps.secrets.open(d.token);
    const allowPrivate = this.s.allowPrivateTargets;
    try {
      switch (d.drain_type) {
        case 'https': {
          // The host shipper's key format, over the audit ids: a receiver that drops repeated keys drops a retried batch.
          const key = `essh-drain-${d.id}-${createHash('sha256').update(`audit:${first}-${last}`).digest('hex').slice(0, 32)}`;
          const res = await httpsPost(url, JSON.stringify(events.map(auditEventJson)), { 'content-type': 'application/json', 'idempotency-key': key },
            d.ca_cert, this.agent, allowPrivate);
          return classifyStatus(res.status, res.body, res.headers['retry-after']);
        }
        case 'syslog':
          await syslogTlsSend({ host: targetHost(url), port: Number(url.port) }, events.map((e) => auditSyslogFrame(e, token)), d.ca_cert, allowPrivate);
          return { kind: 'ok' };
        case 'elasticsearch':
          return await this.deliverElasticsearch(d, url, token, events);
        default:
          return { kind: 'permanent', status: null, message: `unknown drain type ${d.drain_type}` };
      }
    } catch (err) {
      if (isForbiddenTarget(err)) return { kind: 'pause', status: null, message: `the drain's address is refused: ${err.message}` };
      return { kind: 'retry', message: `cannot reach the drain: ${(err as Error).message}` };
    }
  }

  /** Documents are created with their own ids, so a whole batch sent again is safe: what arrived before answers 409. */
  private async deliverElasticsearch(d: DrainRow, base: URL, token: string | null, events: ShippedAuditEvent[]): Promise<Outcome> {
    const url = new URL(base.pathname.replace(/\/$/, '') + '/_bulk', base);
    url.username = base.username;
    url.password = base.password;
    if (d.pipeline) url.searchParams.set('pipeline', d.pipeline);
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    if (token) headers.authorization = `ApiKey ${token}`;
    const res = await httpsPost(url, auditBulkBody(events, d.index_pattern ?? 'essh-sessions'), headers, d.ca_cert, this.agent, this.s.allowPrivateTargets);
    const whole = classifyStatus(res.status, res.body, res.headers['retry-after']);
    if (whole.kind !== 'ok') return whole;
    let items: Record<string, { status: number; error?: unknown }>[];
    try {
      items = (JSON.parse(res.body) as { items?: typeof items }).items ?? [];
    } catch {
      return { kind: 'retry', message: 'Elasticsearch answered something that is not JSON', detail: res.body.slice(0, 300) };
    }
    const statuses = items.map((i) => Object.values(i)[0]!.status);
    if (statuses.some((st) => st === 429 || st >= 500)) return { kind: 'retry', message: 'Elasticsearch asked to retry some of the audit documents (429/5xx)', status: 429 };
    const refused = items.map((i) => Object.values(i)[0]!).filter((r) => !((r.status >= 200 && r.status < 300) || r.status === 409));
    if (refused.length) {
      return {
        kind: 'permanent', status: refused[0]!.status, message: `Elasticsearch refused ${refused.length} audit document(s): HTTP ${refused[0]!.status}`,
        detail: JSON.stringify(refused[0]!.error ?? {}).slice(0, 300),
      };
    }
    return { kind: 'ok' };
  }

  /** Moves the cursor past the batch and counts it, in one transaction (a refusal is recorded with it). */
  private async settle(drainId: number, lastId: number, count: number, outcome: Outcome, what: string) {
    const now = nowIso();
    const refused = outcome.kind === 'permanent' ? count : 0;
    await this.deps.db.transaction().execute(async (tx) => {
      await tx.updateTable('drain_audit_cursors').set({ last_event_id: lastId, updated_at: now })
        .where('drain_id', '=', drainId).where('lease_owner', '=', this.owner).execute();
      if (outcome.kind === 'permanent') {
        await tx.insertInto('log_drain_failures').values({
          drain_id: drainId, operation_id: null, first_seq: null, last_seq: null, events: count, status: outcome.status,
          message: `${what}: ${outcome.message}`, detail: outcome.detail ?? null, at: now,
        }).execute();
      }
      await tx.updateTable('log_drains').set((eb) => ({
        delivered_events: eb('delivered_events', '+', count - refused),
        failed_events: eb('failed_events', '+', refused),
        ...(count > refused ? { last_success_at: now } : {}),
        ...(outcome.kind === 'permanent'
          ? { last_error: outcome.message, last_error_at: now, last_error_status: outcome.status, last_error_detail: outcome.detail ?? null }
          : {}),
      })).where('id', '=', drainId).execute();
    });
  }
}
