import type { Db } from '../lib/db.js';
import { hashToken } from '../lib/secrets.js';
import type { Role } from '../shapes/enumerations.js';
import { ApiError, forbidden, notFound } from './errors.js';

export interface Principal {
  id: number;
  name: string;
  email: string;
  role: Role;
  accountIds: number[];
  /** The API token the request came with; absent for SSH public-key logins. Rate limits key on it. */
  tokenId?: number;
  /** Where the request came from (the API's req.ip): written on the audit events of its changes. */
  sourceAddress?: string;
}

export async function principalForUser(db: Db, userId: number): Promise<Principal | undefined> {
  const user = await db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst();
  if (!user) return undefined;
  const accounts = await db.selectFrom('user_accounts').select('account_id').where('user_id', '=', userId).execute();
  return {
    id: Number(user.id),
    name: user.name,
    email: user.email,
    role: user.role as Role,
    accountIds: accounts.map((a) => Number(a.account_id)),
  };
}

/** A token past its `expires_at` is refused (this is the one check of API tokens: the portal takes none). */
const tokenExpired = (expiresAt: string | null) => expiresAt !== null && Date.parse(expiresAt) <= Date.now();

/** Resolves a bearer token to its user; an unknown, revoked or expired token is a 401 that says what to do. */
export async function authenticate(db: Db, token: string | undefined): Promise<Principal> {
  if (!token) {
    throw new ApiError(401, 'unauthorized', 'Missing bearer token: send "Authorization: Bearer <token>" (see `essh login`).');
  }
  const row = await db
    .selectFrom('api_tokens')
    .select(['id', 'user_id', 'last_used_at', 'expires_at'])
    .where('token_hash', '=', hashToken(token))
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  const principal = row && (await principalForUser(db, Number(row.user_id)));
  if (!row || !principal) {
    throw new ApiError(401, 'unauthorized', 'This API token is not valid (unknown or revoked); ask an admin for a new one.');
  }
  if (tokenExpired(row.expires_at)) {
    throw new ApiError(401, 'unauthorized', `This API token expired at ${row.expires_at}; ask an admin for a new one, or issue yourself ` +
      `one with another token that is still valid (POST /users/${principal.id}/tokens), then \`essh login\` with it.`);
  }
  // At most one write a minute per token: a burst of requests with one token would otherwise queue
  // on that row's lock (PostgreSQL) or on the single writer (SQLite).
  const now = new Date();
  if (!row.last_used_at || Date.parse(row.last_used_at) < now.getTime() - 60_000) {
    await db.updateTable('api_tokens').set({ last_used_at: now.toISOString() }).where('id', '=', row.id).execute();
  }
  return { ...principal, tokenId: Number(row.id) };
}

/** Access rules, in one place: a resource the caller may not see is a 404 (no existence leak). */
export const access = {
  isOperator: (p: Principal) => p.role === 'operator',
  canSeeAccount: (p: Principal, accountId: number) => p.role === 'operator' || p.accountIds.includes(accountId),
  canAdminAccount: (p: Principal, accountId: number) =>
    p.role === 'operator' || (p.role === 'account_admin' && p.accountIds.includes(accountId)),
  /** Members see their own sessions; admins their accounts'; operators all. */
  canSeeSession: (p: Principal, s: { account_id: number; user_id: number }) =>
    p.role === 'operator' ||
    (p.accountIds.includes(s.account_id) && (p.role === 'account_admin' || s.user_id === p.id)),

  /** Who may act on a session they see (terminate it, watch it): its owner, an admin of its account, an operator. */
  canControlSession: (p: Principal, s: { account_id: number; user_id: number }) =>
    access.canSeeSession(p, s) && (p.role === 'operator' || s.user_id === p.id || access.canAdminAccount(p, s.account_id)),

  requireOperator(p: Principal, what = 'do this') {
    if (p.role !== 'operator') throw forbidden(`Only an operator may ${what}.`);
  },
  requireAccountAdmin(p: Principal, accountId: number, what: string) {
    if (!access.canSeeAccount(p, accountId)) throw notFound(what);
    if (!access.canAdminAccount(p, accountId)) throw forbidden(`Only an admin of this account or an operator may do this.`);
  },
};
