import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { CAPS, insertWithinCap } from '../domain/caps.js';
import { hashToken, newToken } from '../lib/secrets.js';
import type { CreateTokenBody } from '../shapes/requests.js';
import { accountIdsOfUser, recordAudit } from './audit.js';
import type { Principal } from './auth.js';
import { conflict, invalid, notFound } from './errors.js';
import { pageOf, type PageRequest } from './pages.js';
import { requireManagedUser } from './user-managers.js';

/** The longest an API token may be issued for: a token that outlives its purpose is a standing risk. */
const MAX_TOKEN_LIFE_S = 10 * 365 * 24 * 3600;

/** A user's API tokens: issued (shown once, stored hashed), listed and revoked by whoever may manage the user. */
export class ApiTokensService {
  constructor(
    private readonly db: Db,
    /** tokenDefaultTtlS: how long an API token issued without `expires_at` lasts (ESSH_TOKEN_DEFAULT_TTL_S); 0: for ever. */
    private readonly opts: { tokenDefaultTtlS?: number } = {},
  ) {}

  /**
   * A new API token of the user; without `expiresAt` it lasts the operator's default (none unless
   * ESSH_TOKEN_DEFAULT_TTL_S is set). `by`: the administrator issuing it, whose audit event it gets.
   */
  async issue(userId: number, name?: string, opts: { expiresAt?: string; by?: Principal } = {}) {
    const ttlS = this.opts.tokenDefaultTtlS ?? 0;
    const expiresAt = opts.expiresAt !== undefined ? new Date(opts.expiresAt).toISOString()
      : ttlS > 0 ? new Date(Date.now() + ttlS * 1000).toISOString() : null;
    if (expiresAt !== null && Date.parse(expiresAt) <= Date.now()) {
      throw invalid(`expires_at (${opts.expiresAt}) is not in the future; give a later time, or leave it out for the default.`);
    }
    if (expiresAt !== null && Date.parse(expiresAt) > Date.now() + MAX_TOKEN_LIFE_S * 1000) {
      throw invalid(`expires_at (${opts.expiresAt}) is more than 10 years away; give an earlier time, or leave it out for the default.`);
    }
    const token = newToken('essh');
    const cap = CAPS.apiTokensPerUser;
    const row = await insertWithinCap(this.db, { table: 'users', id: userId }, cap,
      async (trx) => Number((await trx.selectFrom('api_tokens').select((eb) => eb.fn.countAll<number>().as('n'))
        .where('user_id', '=', userId).where('revoked_at', 'is', null).executeTakeFirstOrThrow()).n),
      () => conflict(`This user already has ${cap} API tokens in use, the most a user may have; revoke one it no longer needs (DELETE /users/${userId}/tokens/{id}).`),
      async (trx) => {
        const row = await trx.insertInto('api_tokens')
          .values({ user_id: userId, token_hash: hashToken(token), name: name ?? null, created_at: nowIso(), expires_at: expiresAt })
          .returning(['id', 'created_at']).executeTakeFirstOrThrow();
        if (opts.by) {
          await recordAudit(trx, opts.by, {
            action: 'api_token.created', target: { id: row.id, name: name ?? null }, accountIds: await accountIdsOfUser(trx, userId),
            fields: ['name', 'expires_at'], details: { user_id: userId, expires_at: expiresAt },
          });
        }
        return row;
      });
    return { id: Number(row.id), name: name ?? null, token, created_at: row.created_at, expires_at: expiresAt };
  }
  async create(p: Principal, userId: number, input: CreateTokenBody = {}) {
    await requireManagedUser(this.db, p, userId);
    return this.issue(userId, input.name, { expiresAt: input.expires_at, by: p });
  }
  async list(p: Principal, userId: number, page: PageRequest) {
    await requireManagedUser(this.db, p, userId);
    let q = this.db.selectFrom('api_tokens').select(['id', 'name', 'created_at', 'last_used_at', 'revoked_at', 'expires_at'])
      .where('user_id', '=', userId).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (r) => Number(r.id), (r) => ({ ...r, id: Number(r.id) }));
  }
  async revoke(p: Principal, userId: number, tokenId: number) {
    await requireManagedUser(this.db, p, userId);
    await this.db.transaction().execute(async (trx) => {
      const res = await trx.updateTable('api_tokens').set({ revoked_at: nowIso() })
        .where('id', '=', tokenId).where('user_id', '=', userId).where('revoked_at', 'is', null).executeTakeFirst();
      if (Number(res.numUpdatedRows) === 0) throw notFound(`Token ${tokenId}`);
      await recordAudit(trx, p, {
        action: 'api_token.revoked', target: { id: tokenId }, accountIds: await accountIdsOfUser(trx, userId), fields: ['revoked_at'],
        details: { user_id: userId },
      });
    });
  }
}
