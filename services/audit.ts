import { EventEmitter } from 'node:events';
import type { Generated, Kysely } from 'kysely';
import type { Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { access, type Principal } from './auth.js';
import { forbidden, invalid, notFound } from './errors.js';
import { emptyPage, pageOf, type PageRequest } from './pages.js';
import type { AuditAction, AuditTargetType } from '../shapes/enumerations.js';
import type { AuditFilters } from '../shapes/requests.js';

/**
 * The audit trail: every change an administrator makes to users, roles, tokens, SSH keys, accounts
 * (plans and grants), stacks, apps, drains and redaction rules. This module is the only writer of
 * `audit_events`; the services call `recordAudit` in the transaction of the change they make. Secrets
 * never go in: env values, tokens, drain credentials are named, never shown (an SSH key by its
 * fingerprint).
 */


export interface AuditEventsTable {
  id: Generated<number>;
  at: string;
  actor_id: number | null;
  actor_name: string | null;
  actor_email: string | null;
  actor_role: string | null;
  source_address: string | null;
  action: string;
  target_type: string;
  target_id: string;
  target_name: string | null;
  /** JSON array of the names of the fields the change set. */
  fields: string;
  /** JSON object of what changed that is no secret (env variables by name only). */
  details: string;
}
export interface AuditEventAccountsTable {
  event_id: number;
  account_id: number;
}
export interface DrainAuditCursorsTable {
  drain_id: number;
  last_event_id: number;
  lease_owner: string | null;
  lease_until: string | null;
  updated_at: string;
}

declare module '../lib/db.js' {
  interface Database {
    audit_events: AuditEventsTable;
    audit_event_accounts: AuditEventAccountsTable;
    drain_audit_cursors: DrainAuditCursorsTable;
  }
}

export interface AuditChange {
  action: `${AuditTargetType}.${string}` & AuditAction;
  target: { id: number | string; name?: string | null };
  /** The accounts the change concerns (its drains get it, its admins read it); none: operators only. */
  accountIds: readonly number[];
  /** The names of the fields the change set (kept sorted). */
  fields?: readonly string[];
  details?: Record<string, unknown>;
}

const news = new EventEmitter();
news.setMaxListeners(0);

/** Tells this process's audit shipper (drains/audit-shipper.ts) that an event was written. */
export function onAuditRecorded(listener: () => void): () => void {
  news.on('recorded', listener);
  return () => news.off('recorded', listener);
}

/** Writes one audit event, with `db` the transaction that makes the change (so both are kept, or neither). */
export async function recordAudit(db: Kysely<Database>, p: Principal, change: AuditChange): Promise<void> {
  const row = await db.insertInto('audit_events').values({
    at: nowIso(),
    actor_id: p.id, actor_name: p.name, actor_email: p.email, actor_role: p.role,
    source_address: p.sourceAddress ?? null,
    action: change.action,
    target_type: change.action.slice(0, change.action.indexOf('.')),
    target_id: String(change.target.id),
    target_name: change.target.name ?? null,
    fields: JSON.stringify([...(change.fields ?? [])].sort()),
    details: JSON.stringify(change.details ?? {}),
  }).returning('id').executeTakeFirstOrThrow();
  for (const accountId of new Set(change.accountIds)) {
    await db.insertInto('audit_event_accounts').values({ event_id: row.id, account_id: accountId }).execute();
  }
  // After the change's transaction commits, most likely; the shipper looks again every second anyway.
  setTimeout(() => news.emit('recorded'), 20).unref();
}

/** The accounts a user belongs to: the ones that an event about the user, its tokens or keys concerns. */
export async function accountIdsOfUser(db: Kysely<Database>, userId: number): Promise<number[]> {
  const rows = await db.selectFrom('user_accounts').select('account_id').where('user_id', '=', userId).execute();
  return rows.map((r) => Number(r.account_id));
}

/** The names of an environment's variables that were added, removed or given another value. */
export function envChanges(before: Record<string, string>, after: Record<string, string>) {
  const names = (f: (k: string) => boolean, keys: string[]) => keys.filter(f).sort();
  return {
    added: names((k) => !(k in before), Object.keys(after)),
    removed: names((k) => !(k in after), Object.keys(before)),
    changed: names((k) => k in before && before[k] !== after[k], Object.keys(after)),
  };
}

/** GET /audit_events: operators read every event; an account admin those of the accounts it administers. */
export class AuditService {
  constructor(private readonly db: Db) {}

  async list(p: Principal, f: AuditFilters, page: PageRequest) {
    let accountIds: number[] | undefined;
    if (f.account !== undefined) {
      // An account the caller may not see reads as missing, whatever its role (no existence leak).
      const a = await this.db.selectFrom('accounts').select('id').where('handle', '=', f.account).executeTakeFirst();
      if (!a || !access.canSeeAccount(p, Number(a.id))) throw notFound(`Account "${f.account}"`);
      accountIds = [Number(a.id)];
    }
    if (!access.isOperator(p) && p.role !== 'account_admin') {
      throw forbidden('Only an operator, or an account admin for its own accounts, may read the audit trail.');
    }
    if (accountIds) access.requireAccountAdmin(p, accountIds[0]!, `Account "${f.account}"`);
    if (f.since && f.until && Date.parse(f.since) > Date.parse(f.until)) throw invalid(`"since" (${f.since}) is after "until" (${f.until}); swap them.`);
    if (!accountIds && !access.isOperator(p)) {
      accountIds = p.accountIds.filter((a) => access.canAdminAccount(p, a));
      if (!accountIds.length) return emptyPage<AuditEventView>();
    }
    let q = this.db.selectFrom('audit_events as e').selectAll('e').orderBy('e.id', 'desc').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('e.id', '<', page.after);
    if (accountIds) {
      const ids = accountIds;
      q = q.where('e.id', 'in', (eb) => eb.selectFrom('audit_event_accounts').select('event_id').where('account_id', 'in', ids));
    }
    if (f.actor !== undefined) {
      q = /^\d+$/.test(f.actor) ? q.where('e.actor_id', '=', Number(f.actor)) : q.where('e.actor_email', '=', f.actor.toLowerCase());
    }
    if (f.target_type) q = q.where('e.target_type', '=', f.target_type);
    if (f.action) q = q.where('e.action', '=', f.action);
    // Times are stored as ISO text in UTC, so they compare as text; the filters are normalised to it.
    if (f.since) q = q.where('e.at', '>=', new Date(f.since).toISOString());
    if (f.until) q = q.where('e.at', '<', new Date(f.until).toISOString());
    const rows = await q.execute();
    const kept = rows.slice(0, page.limit);
    const accounts = kept.length
      ? await this.db.selectFrom('audit_event_accounts as ea').innerJoin('accounts as a', 'a.id', 'ea.account_id')
        .select(['ea.event_id', 'ea.account_id', 'a.handle']).where('ea.event_id', 'in', kept.map((r) => r.id)).orderBy('a.handle').execute()
      : [];
    return pageOf(rows, page, (r) => Number(r.id), (r) => auditEventView(r, accounts
      .filter((a) => Number(a.event_id) === Number(r.id) && access.canAdminAccount(p, Number(a.account_id)))
      .map((a) => a.handle)));
  }
}

/** The one shape of an audit event, for the API and the drains alike. */
export function auditEventView(r: Omit<AuditEventsTable, 'id'> & { id: number }, accounts: string[]) {
  return {
    id: Number(r.id),
    at: r.at,
    accounts,
    actor: r.actor_id === null ? null : { id: Number(r.actor_id), name: r.actor_name, email: r.actor_email, role: r.actor_role },
    source_address: r.source_address,
    action: r.action,
    target: { type: r.target_type, id: r.target_id, name: r.target_name },
    fields: JSON.parse(r.fields) as string[],
    details: JSON.parse(r.details) as Record<string, unknown>,
  };
}
export type AuditEventView = ReturnType<typeof auditEventView>;
