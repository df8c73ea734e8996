import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { DEFAULT_MAX_SESSION_DURATION_S } from '../shapes/enumerations.js';
import type { CreateStackBody } from '../shapes/requests.js';
import { recordAudit } from './audit.js';
import { access, type Principal } from './auth.js';
import { conflict, invalid, isUniqueViolation, notFound } from './errors.js';
import { pageOf, type PageRequest } from './pages.js';

/** Stacks: where sessions run; only a dedicated one may change its maximum session duration. */
export class StacksService {
  constructor(private readonly db: Db) {}

  private view(s: { id: number; name: string; max_session_duration_s: number; dedicated: number; idle_timeout_s: number | null; created_at: string }) {
    return {
      id: Number(s.id), name: s.name, max_session_duration_s: Number(s.max_session_duration_s),
      dedicated: Boolean(s.dedicated), idle_timeout_s: s.idle_timeout_s === null ? null : Number(s.idle_timeout_s), created_at: s.created_at,
    };
  }
  async create(p: Principal, input: CreateStackBody) {
    access.requireOperator(p);
    const max = input.max_session_duration_s ?? DEFAULT_MAX_SESSION_DURATION_S;
    if (max !== DEFAULT_MAX_SESSION_DURATION_S && !input.dedicated) {
      throw invalid('Only a dedicated stack may change max_session_duration_s; set "dedicated": true or leave it out.');
    }
    if (max > DEFAULT_MAX_SESSION_DURATION_S) {
      throw invalid(`max_session_duration_s may be at most ${DEFAULT_MAX_SESSION_DURATION_S} (7 days).`);
    }
    const idle = input.idle_timeout_s || null;
    if (idle !== null && idle > max) {
      throw invalid(`idle_timeout_s (${idle}) is longer than the stack's max_session_duration_s (${max}): its sessions would end before; leave it out or set less.`);
    }
    try {
      const row = await this.db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('stacks')
          .values({ name: input.name, max_session_duration_s: max, dedicated: input.dedicated ? 1 : 0, idle_timeout_s: idle, created_at: nowIso() })
          .returningAll().executeTakeFirstOrThrow();
        await recordAudit(trx, p, {
          action: 'stack.created', target: { id: row.id, name: row.name }, accountIds: [], fields: Object.keys(input),
          details: { max_session_duration_s: max, dedicated: Boolean(input.dedicated), idle_timeout_s: idle },
        });
        return row;
      });
      return this.view(row);
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A stack named "${input.name}" already exists.`);
      throw err;
    }
  }
  async list(_p: Principal, page: PageRequest) {
    let q = this.db.selectFrom('stacks').selectAll().orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (s) => Number(s.id), (s) => this.view(s));
  }
  async get(_p: Principal, name: string) {
    const s = await this.db.selectFrom('stacks').selectAll().where('name', '=', name).executeTakeFirst();
    if (!s) throw notFound(`Stack "${name}"`);
    return this.view(s);
  }
}
