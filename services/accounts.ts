import type { Selectable, Transaction } from 'kysely';
import type { AccountsTable, Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { parsePrefixes } from '../domain/grants.js';
import { planCpus, planLargestContainerMb, planLimit } from '../domain/plans.js';
import type { CreateAccountBody, PatchAccountBody } from '../shapes/requests.js';
import { recordAudit } from './audit.js';
import { access, type Principal } from './auth.js';
import { conflict, invalid, isUniqueViolation, notFound } from './errors.js';
import { emptyPage, pageOf, type PageRequest } from './pages.js';

/** Accounts: their plans, limits, granted stacks and image prefixes (operators change them). */
export class AccountsService {
  constructor(private readonly db: Db) {}

  async view(a: Selectable<AccountsTable>) {
    const stacks = await this.db.selectFrom('account_stacks as g').innerJoin('stacks as s', 's.id', 'g.stack_id')
      .select('s.name').where('g.account_id', '=', a.id).orderBy('s.name').execute();
    return {
      id: Number(a.id), handle: a.handle, plan: a.plan,
      max_concurrent_sessions: a.max_concurrent_sessions ?? planLimit(a.plan),
      max_concurrent_sessions_override: a.max_concurrent_sessions,
      largest_container_mb: planLargestContainerMb(a.plan),
      cpus_per_container: planCpus(a.plan),
      // Empty: every shared stack.
      stacks: stacks.map((x) => x.name),
      image_prefixes: parsePrefixes(a.image_prefixes),
      port_forwarding: Number(a.port_forwarding) === 1,
      file_transfer: Number(a.file_transfer) === 1,
      idle_timeout_s: a.idle_timeout_s === null ? null : Number(a.idle_timeout_s),
      created_at: a.created_at,
    };
  }
  async create(p: Principal, input: CreateAccountBody) {
    access.requireOperator(p);
    try {
      const id = await this.db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('accounts')
          .values({
            handle: input.handle, plan: input.plan, max_concurrent_sessions: input.max_concurrent_sessions ?? null,
            image_prefixes: JSON.stringify(input.image_prefixes ?? []), created_at: nowIso(),
          })
          .returning('id').executeTakeFirstOrThrow();
        if (input.stacks) await grantStacks(trx, Number(row.id), input.stacks);
        await recordAudit(trx, p, {
          action: 'account.created', target: { id: row.id, name: input.handle }, accountIds: [Number(row.id)], fields: Object.keys(input),
          details: { plan: input.plan, max_concurrent_sessions: input.max_concurrent_sessions ?? null, stacks: input.stacks ?? [], image_prefixes: input.image_prefixes ?? [] },
        });
        return Number(row.id);
      });
      return this.view(await this.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An account with handle "${input.handle}" already exists; pick another handle.`);
      throw err;
    }
  }
  /** Operator only: the plan, the session override, the granted stacks and image prefixes, port forwarding, file transfer. */
  async patch(p: Principal, handle: string, patch: PatchAccountBody) {
    access.requireOperator(p);
    const a = await this.byHandle(p, handle);
    await this.db.transaction().execute(async (trx) => {
      const stacksBefore = patch.stacks === undefined ? [] : (await trx.selectFrom('account_stacks as g').innerJoin('stacks as s', 's.id', 'g.stack_id')
        .select('s.name').where('g.account_id', '=', a.id).orderBy('s.name').execute()).map((x) => x.name);
      const before = {
        plan: a.plan, max_concurrent_sessions: a.max_concurrent_sessions, image_prefixes: parsePrefixes(a.image_prefixes), stacks: stacksBefore,
        port_forwarding: Number(a.port_forwarding) === 1, file_transfer: Number(a.file_transfer) === 1, idle_timeout_s: a.idle_timeout_s,
      };
      await recordAudit(trx, p, {
        action: 'account.updated', target: { id: a.id, name: a.handle }, accountIds: [Number(a.id)], fields: Object.keys(patch),
        details: Object.fromEntries(Object.entries(patch).map(([k, to]) => [k, { from: before[k as keyof typeof before], to }])),
      });
      const set = {
        ...(patch.plan !== undefined ? { plan: patch.plan } : {}),
        ...(patch.max_concurrent_sessions !== undefined ? { max_concurrent_sessions: patch.max_concurrent_sessions } : {}),
        ...(patch.image_prefixes !== undefined ? { image_prefixes: JSON.stringify(patch.image_prefixes) } : {}),
        ...(patch.port_forwarding !== undefined ? { port_forwarding: patch.port_forwarding ? 1 : 0 } : {}),
        ...(patch.file_transfer !== undefined ? { file_transfer: patch.file_transfer ? 1 : 0 } : {}),
        // 0 and null both mean none; stored as null, so that there is one way to read it.
        ...(patch.idle_timeout_s !== undefined ? { idle_timeout_s: patch.idle_timeout_s || null } : {}),
      };
      if (Object.keys(set).length) await trx.updateTable('accounts').set(set).where('id', '=', a.id).execute();
      if (patch.stacks !== undefined) {
        await trx.deleteFrom('account_stacks').where('account_id', '=', a.id).execute();
        await grantStacks(trx, Number(a.id), patch.stacks);
      }
    });
    return this.view(await this.db.selectFrom('accounts').selectAll().where('id', '=', a.id).executeTakeFirstOrThrow());
  }
  async list(p: Principal, page: PageRequest) {
    let q = this.db.selectFrom('accounts').selectAll().orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    if (!access.isOperator(p)) {
      if (p.accountIds.length === 0) return emptyPage<Awaited<ReturnType<AccountsService['view']>>>();
      q = q.where('id', 'in', p.accountIds);
    }
    return pageOf(await q.execute(), page, (a) => Number(a.id), (a) => this.view(a));
  }
  async byHandle(p: Principal, handle: string) {
    const a = await this.db.selectFrom('accounts').selectAll().where('handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.id))) throw notFound(`Account "${handle}"`);
    return a;
  }
  async get(p: Principal, handle: string) {
    return this.view(await this.byHandle(p, handle));
  }
}

/**
 * Grants the account `stacks` (replacing nothing: the caller cleared the old grants). A dedicated stack
 * is its account's alone, so granting one that another account holds is a conflict.
 */
async function grantStacks(trx: Transaction<Database>, accountId: number, names: string[]) {
  for (const name of new Set(names)) {
    const stack = await trx.selectFrom('stacks').select(['id', 'dedicated']).where('name', '=', name).executeTakeFirst();
    if (!stack) throw invalid(`Stack "${name}" does not exist; create it first (POST /stacks).`);
    if (stack.dedicated) {
      const holder = await trx.selectFrom('account_stacks as g').innerJoin('accounts as a', 'a.id', 'g.account_id')
        .select('a.handle').where('g.stack_id', '=', stack.id).where('g.account_id', '!=', accountId).executeTakeFirst();
      if (holder) throw conflict(`Stack "${name}" is dedicated to account ${holder.handle}; a dedicated stack serves one account only.`);
    }
    await trx.insertInto('account_stacks').values({ account_id: accountId, stack_id: stack.id }).execute();
  }
}
