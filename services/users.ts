import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { CreateUserBody } from '../shapes/requests.js';
import type { AccountsService } from './accounts.js';
import type { ApiTokensService } from './api-tokens.js';
import { recordAudit } from './audit.js';
import { access, type Principal } from './auth.js';
import { conflict, invalid, isUniqueViolation } from './errors.js';
import { pageOf, type PageRequest } from './pages.js';
import { requireManagedUser } from './user-managers.js';

/** Users and their accounts; a new user gets its first API token. */
export class UsersService {
  constructor(private readonly db: Db, private readonly accounts: AccountsService, private readonly tokens: ApiTokensService) {}

  private async view(id: number) {
    const u = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const accounts = await this.db.selectFrom('user_accounts as ua').innerJoin('accounts as a', 'a.id', 'ua.account_id')
      .select('a.handle').where('ua.user_id', '=', id).orderBy('a.handle').execute();
    return { id: Number(u.id), name: u.name, email: u.email, role: u.role, accounts: accounts.map((a) => a.handle), created_at: u.created_at };
  }
  async create(p: Principal, input: CreateUserBody) {
    const accountIds: number[] = [];
    for (const handle of input.accounts) {
      const a = await this.accounts.byHandle(p, handle);
      access.requireAccountAdmin(p, Number(a.id), `Account "${handle}"`);
      accountIds.push(Number(a.id));
    }
    if (input.role === 'operator') access.requireOperator(p);
    if (!access.isOperator(p) && accountIds.length === 0) {
      throw invalid('Name at least one of your accounts in "accounts".');
    }
    try {
      const id = await this.db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('users')
          .values({ name: input.name, email: input.email.toLowerCase(), role: input.role, created_at: nowIso() })
          .returning('id').executeTakeFirstOrThrow();
        for (const accountId of accountIds) {
          await trx.insertInto('user_accounts').values({ user_id: row.id, account_id: accountId }).execute();
        }
        await recordAudit(trx, p, {
          action: 'user.created', target: { id: row.id, name: input.email.toLowerCase() }, accountIds, fields: Object.keys(input),
          details: { name: input.name, email: input.email.toLowerCase(), role: input.role, accounts: input.accounts },
        });
        return Number(row.id);
      });
      const first = await this.tokens.issue(id, 'first token', { by: p });
      return { ...(await this.view(id)), token: first.token, token_expires_at: first.expires_at };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A user with e-mail ${input.email} already exists.`);
      throw err;
    }
  }
  async get(p: Principal, id: number) {
    await requireManagedUser(this.db, p, id);
    return this.view(id);
  }
  /** Operators: every user; account admins: themselves and the users of their accounts; members: themselves. */
  async list(p: Principal, page: PageRequest) {
    let q = this.db.selectFrom('users').select('id').orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    if (!access.isOperator(p)) {
      const adminOf = p.accountIds.filter((a) => access.canAdminAccount(p, a));
      q = adminOf.length === 0
        ? q.where('id', '=', p.id)
        : q.where((eb) => eb.or([
          eb('id', '=', p.id),
          eb('id', 'in', eb.selectFrom('user_accounts').select('user_id').where('account_id', 'in', adminOf)),
        ]));
    }
    return pageOf(await q.execute(), page, (u) => Number(u.id), (u) => this.view(Number(u.id)));
  }
}
