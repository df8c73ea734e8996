// Who may manage a user (its tokens and keys): the rule the users, API tokens and SSH keys services share.
import type { Db } from '../lib/db.js';
import { access, type Principal } from './auth.js';
import { ApiError, notFound } from './errors.js';

/** The user exists and the caller may manage it (see requireUserManager); else a 404 or a 403. */
export async function requireManagedUser(db: Db, p: Principal, userId: number) {
  const exists = await db.selectFrom('users').select('id').where('id', '=', userId).executeTakeFirst();
  if (!exists) throw notFound(`User ${userId}`);
  await requireUserManager(db, p, userId);
}

/**
 * Whether the caller may manage this user (its tokens and keys): itself, operators, and an account
 * admin who administers every account the user belongs to. The last part keeps an admin of one
 * account from taking over a user (by issuing it a token) who also works on another account, or an
 * operator. A user who shares no account with the caller does not exist for it (404).
 */
export async function requireUserManager(db: Db, p: Principal, userId: number) {
  if (p.id === userId || access.isOperator(p)) return;
  const target = await db.selectFrom('users as u').leftJoin('user_accounts as ua', 'ua.user_id', 'u.id')
    .select(['u.role', 'ua.account_id']).where('u.id', '=', userId).execute();
  const accounts = target.filter((t) => t.account_id !== null).map((t) => Number(t.account_id));
  if (!accounts.some((a) => p.accountIds.includes(a))) throw notFound(`User ${userId}`);
  const isOperator = target.some((t) => t.role === 'operator');
  if (isOperator || !accounts.every((a) => access.canAdminAccount(p, a))) {
    throw new ApiError(403, 'forbidden', 'Only the user itself, an admin of all its accounts or an operator may do this.');
  }
}
