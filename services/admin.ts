import type { Selectable, Transaction } from 'kysely';
import type { AccountsTable, Database, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { planCpus, planLargestContainerMb, planLimit } from '../domain/plans.js';
import { DEFAULT_MAX_SESSION_DURATION_S, SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';
import type {
  AddSshKeyBody, CreateAccountBody, CreateAppBody, CreateStackBody, CreateTokenBody, CreateUserBody, PatchAccountBody, PatchAppBody,
} from '../shapes/requests.js';
import { openEnv, sealEnv } from '../domain/app-env.js';
import { hashToken, newToken, type SecretBox } from '../lib/secrets.js';
import { issueKeyChallenge, keyChallengeProblem } from '../lib/ssh-key-challenge.js';
import { sshFingerprint } from '../lib/ssh-fingerprint.js';
import { SshSigError, parseSshSignature, sshPublicKey, verifySshSignature } from '../lib/sshsig.js';
import { forbiddenNetworkReason } from '../lib/networks.js';
import { access, type Principal } from './auth.js';
import { grantProblem, parsePrefixes } from '../domain/grants.js';
import { CAPS, insertWithinCap } from '../domain/caps.js';
import { ApiError, conflict, forbidden, invalid, notFound } from './errors.js';
import { emptyPage, pageOf, type PageRequest } from './pages.js';
import { accountIdsOfUser, envChanges, recordAudit } from './audit.js';

/** The longest an API token may be issued for: a token that outlives its purpose is a standing risk. */
const MAX_TOKEN_LIFE_S = 10 * 365 * 24 * 3600;

const isUniqueViolation = (err: unknown) =>
  /UNIQUE constraint|duplicate key value/i.test(String((err as Error)?.message ?? ''));

/** Accounts, stacks, apps, users, tokens and SSH keys; every rule of who may do what lives here. */
export class AdminService {
  constructor(
    private readonly db: Db,
    private readonly secrets: SecretBox,
    /** tokenDefaultTtlS: how long an API token issued without `expires_at` lasts (ESSH_TOKEN_DEFAULT_TTL_S); 0: for ever. */
    private readonly opts: { tokenDefaultTtlS?: number } = {},
  ) {}

  // --- accounts -------------------------------------------------------------------------------
  private async accountView(a: Selectable<AccountsTable>) {
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
      created_at: a.created_at,
    };
  }
  async createAccount(p: Principal, input: CreateAccountBody) {
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
      return this.accountView(await this.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An account with handle "${input.handle}" already exists; pick another handle.`);
      throw err;
    }
  }
  /** Operator only: the plan, the session override, the granted stacks and image prefixes, port forwarding. */
  async patchAccount(p: Principal, handle: string, patch: PatchAccountBody) {
    access.requireOperator(p);
    const a = await this.accountByHandle(p, handle);
    await this.db.transaction().execute(async (trx) => {
      const stacksBefore = patch.stacks === undefined ? [] : (await trx.selectFrom('account_stacks as g').innerJoin('stacks as s', 's.id', 'g.stack_id')
        .select('s.name').where('g.account_id', '=', a.id).orderBy('s.name').execute()).map((x) => x.name);
      const before = {
        plan: a.plan, max_concurrent_sessions: a.max_concurrent_sessions, image_prefixes: parsePrefixes(a.image_prefixes), stacks: stacksBefore,
        port_forwarding: Number(a.port_forwarding) === 1,
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
      };
      if (Object.keys(set).length) await trx.updateTable('accounts').set(set).where('id', '=', a.id).execute();
      if (patch.stacks !== undefined) {
        await trx.deleteFrom('account_stacks').where('account_id', '=', a.id).execute();
        await grantStacks(trx, Number(a.id), patch.stacks);
      }
    });
    return this.accountView(await this.db.selectFrom('accounts').selectAll().where('id', '=', a.id).executeTakeFirstOrThrow());
  }
  async listAccounts(p: Principal, page: PageRequest) {
    let q = this.db.selectFrom('accounts').selectAll().orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    if (!access.isOperator(p)) {
      if (p.accountIds.length === 0) return emptyPage<Awaited<ReturnType<AdminService['accountView']>>>();
      q = q.where('id', 'in', p.accountIds);
    }
    return pageOf(await q.execute(), page, (a) => Number(a.id), (a) => this.accountView(a));
  }
  async accountByHandle(p: Principal, handle: string) {
    const a = await this.db.selectFrom('accounts').selectAll().where('handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.id))) throw notFound(`Account "${handle}"`);
    return a;
  }
  async getAccount(p: Principal, handle: string) {
    return this.accountView(await this.accountByHandle(p, handle));
  }

  // --- stacks ---------------------------------------------------------------------------------
  private stackView(s: { id: number; name: string; max_session_duration_s: number; dedicated: number; created_at: string }) {
    return {
      id: Number(s.id), name: s.name, max_session_duration_s: Number(s.max_session_duration_s),
      dedicated: Boolean(s.dedicated), created_at: s.created_at,
    };
  }
  async createStack(p: Principal, input: CreateStackBody) {
    access.requireOperator(p);
    const max = input.max_session_duration_s ?? DEFAULT_MAX_SESSION_DURATION_S;
    if (max !== DEFAULT_MAX_SESSION_DURATION_S && !input.dedicated) {
      throw invalid('Only a dedicated stack may change max_session_duration_s; set "dedicated": true or leave it out.');
    }
    if (max > DEFAULT_MAX_SESSION_DURATION_S) {
      throw invalid(`max_session_duration_s may be at most ${DEFAULT_MAX_SESSION_DURATION_S} (7 days).`);
    }
    try {
      const row = await this.db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('stacks')
          .values({ name: input.name, max_session_duration_s: max, dedicated: input.dedicated ? 1 : 0, created_at: nowIso() })
          .returningAll().executeTakeFirstOrThrow();
        await recordAudit(trx, p, {
          action: 'stack.created', target: { id: row.id, name: row.name }, accountIds: [], fields: Object.keys(input),
          details: { max_session_duration_s: max, dedicated: Boolean(input.dedicated) },
        });
        return row;
      });
      return this.stackView(row);
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A stack named "${input.name}" already exists.`);
      throw err;
    }
  }
  async listStacks(_p: Principal, page: PageRequest) {
    let q = this.db.selectFrom('stacks').selectAll().orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (s) => Number(s.id), (s) => this.stackView(s));
  }
  async getStack(_p: Principal, name: string) {
    const s = await this.db.selectFrom('stacks').selectAll().where('name', '=', name).executeTakeFirst();
    if (!s) throw notFound(`Stack "${name}"`);
    return this.stackView(s);
  }

  // --- apps -----------------------------------------------------------------------------------
  private appsQuery() {
    return this.db.selectFrom('apps as a')
      .innerJoin('accounts as acc', 'acc.id', 'a.account_id')
      .innerJoin('stacks as s', 's.id', 'a.stack_id')
      .selectAll('a').select(['acc.handle as account_handle', 's.name as stack_name']);
  }
  private appView(a: Awaited<ReturnType<ReturnType<AdminService['appsQuery']>['executeTakeFirstOrThrow']>>, showEnv: boolean) {
    const env = openEnv(this.secrets, a.env);
    return {
      id: Number(a.id), handle: a.handle, account: a.account_handle, stack: a.stack_name, image: a.image,
      // Env values may be secrets: only those who may manage the app see them.
      env: showEnv ? env : Object.fromEntries(Object.keys(env).map((k) => [k, '[hidden]'])),
      command: a.command ? (JSON.parse(a.command) as string[]) : null,
      working_dir: a.working_dir, user: a.user, network: a.network, warm_pool: Number(a.warm_pool), created_at: a.created_at,
    };
  }
  async createApp(p: Principal, input: CreateAppBody) {
    const account = await this.accountByHandle(p, input.account);
    access.requireAccountAdmin(p, Number(account.id), `Account "${input.account}"`);
    if (input.network !== undefined) checkNetwork(p, input.network);
    if (input.warm_pool !== undefined && input.warm_pool > 0) access.requireOperator(p, 'set an app\'s "warm_pool"');
    const stack = await this.db.selectFrom('stacks').select(['id', 'name']).where('name', '=', input.stack).executeTakeFirst();
    if (!stack) throw invalid(`Stack "${input.stack}" does not exist; create it first (POST /stacks) or use an existing one.`);
    await this.requireGranted(account, stack, input.image);
    try {
      const row = await this.db.transaction().execute(async (trx) => {
        const row = await trx.insertInto('apps').values({
          handle: input.handle, account_id: account.id, stack_id: stack.id, image: input.image,
          env: sealEnv(this.secrets, input.env ?? {}), command: input.command ? JSON.stringify(input.command) : null,
          working_dir: input.working_dir ?? null, user: input.user ?? null, network: input.network ?? null,
          warm_pool: input.warm_pool ?? 0, created_at: nowIso(),
        }).returning('id').executeTakeFirstOrThrow();
        const { env, ...settings } = input;
        await recordAudit(trx, p, {
          action: 'app.created', target: { id: row.id, name: input.handle }, accountIds: [Number(account.id)], fields: Object.keys(input),
          details: { ...settings, env: envChanges({}, env ?? {}) },
        });
        return row;
      });
      return this.getAppById(p, Number(row.id));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An app with handle "${input.handle}" already exists; pick another handle.`);
      throw err;
    }
  }
  /** Account admins change the app's container settings; its stack, network and warm pool are the operator's. */
  async patchApp(p: Principal, handle: string, patch: PatchAppBody) {
    const app = await this.db.selectFrom('apps').selectAll().where('handle', '=', handle).executeTakeFirst();
    if (!app || !access.canSeeAccount(p, Number(app.account_id))) throw notFound(`App "${handle}"`);
    access.requireAccountAdmin(p, Number(app.account_id), `App "${handle}"`);
    if (patch.network !== undefined && patch.network !== null) checkNetwork(p, patch.network);
    for (const field of ['network', 'stack', 'warm_pool'] as const) {
      if (patch[field] !== undefined) access.requireOperator(p, `change an app's "${field}"`);
    }
    const account = await this.db.selectFrom('accounts').selectAll().where('id', '=', app.account_id).executeTakeFirstOrThrow();
    const stack = patch.stack !== undefined
      ? await this.db.selectFrom('stacks').select(['id', 'name']).where('name', '=', patch.stack).executeTakeFirst()
      : await this.db.selectFrom('stacks').select(['id', 'name']).where('id', '=', app.stack_id).executeTakeFirst();
    if (!stack) throw invalid(`Stack "${patch.stack}" does not exist; create it first (POST /stacks) or use an existing one.`);
    if (patch.stack !== undefined || patch.image !== undefined) await this.requireGranted(account, stack, patch.image ?? app.image);
    const json = (v: unknown) => (v === null ? null : JSON.stringify(v));
    const set = {
      ...(patch.stack !== undefined ? { stack_id: stack.id } : {}),
      ...(patch.image !== undefined ? { image: patch.image } : {}),
      ...(patch.env !== undefined ? { env: sealEnv(this.secrets, patch.env) } : {}),
      ...(patch.command !== undefined ? { command: json(patch.command) } : {}),
      ...(patch.working_dir !== undefined ? { working_dir: patch.working_dir } : {}),
      ...(patch.user !== undefined ? { user: patch.user } : {}),
      ...(patch.network !== undefined ? { network: patch.network } : {}),
      ...(patch.warm_pool !== undefined ? { warm_pool: patch.warm_pool } : {}),
    };
    // An empty patch changes nothing (an UPDATE with nothing to set is not SQL).
    if (Object.keys(set).length) {
      await this.db.transaction().execute(async (trx) => {
        await trx.updateTable('apps').set(set).where('id', '=', app.id).execute();
        const { env, ...settings } = patch;
        const before: Record<string, unknown> = {
          ...app, command: app.command === null ? null : JSON.parse(app.command), stack: (await trx.selectFrom('stacks').select('name').where('id', '=', app.stack_id).executeTakeFirst())?.name,
        };
        await recordAudit(trx, p, {
          action: 'app.updated', target: { id: app.id, name: app.handle }, accountIds: [Number(app.account_id)], fields: Object.keys(patch),
          details: {
            ...Object.fromEntries(Object.entries(settings).map(([k, to]) => [k, { from: before[k] ?? null, to }])),
            ...(env !== undefined ? { env: envChanges(openEnv(this.secrets, app.env), env) } : {}),
          },
        });
      });
    }
    return this.getAppById(p, Number(app.id));
  }
  private async requireGranted(account: Selectable<AccountsTable>, stack: { id: number; name: string }, image: string) {
    const problem = await grantProblem(this.db, account, stack, image);
    if (problem) throw forbidden(`Not granted: ${problem}.`);
  }
  private async getAppById(p: Principal, id: number) {
    const a = await this.appsQuery().where('a.id', '=', id).executeTakeFirstOrThrow();
    return this.appView(a, access.canAdminAccount(p, Number(a.account_id)));
  }
  async getApp(p: Principal, handle: string) {
    const a = await this.appsQuery().where('a.handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.account_id))) throw notFound(`App "${handle}"`);
    return this.appView(a, access.canAdminAccount(p, Number(a.account_id)));
  }
  async listApps(p: Principal, page: PageRequest) {
    let q = this.appsQuery().orderBy('a.id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('a.id', '>', page.after);
    if (!access.isOperator(p)) {
      if (p.accountIds.length === 0) return emptyPage<ReturnType<AdminService['appView']>>();
      q = q.where('a.account_id', 'in', p.accountIds);
    }
    return pageOf(await q.execute(), page, (a) => Number(a.id), (a) => this.appView(a, access.canAdminAccount(p, Number(a.account_id))));
  }

  // --- users, tokens, SSH keys -----------------------------------------------------------------
  private async userView(id: number) {
    const u = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const accounts = await this.db.selectFrom('user_accounts as ua').innerJoin('accounts as a', 'a.id', 'ua.account_id')
      .select('a.handle').where('ua.user_id', '=', id).orderBy('a.handle').execute();
    return { id: Number(u.id), name: u.name, email: u.email, role: u.role, accounts: accounts.map((a) => a.handle), created_at: u.created_at };
  }
  async createUser(p: Principal, input: CreateUserBody) {
    const accountIds: number[] = [];
    for (const handle of input.accounts) {
      const a = await this.accountByHandle(p, handle);
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
      const first = await this.issueToken(id, 'first token', { by: p });
      return { ...(await this.userView(id)), token: first.token, token_expires_at: first.expires_at };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A user with e-mail ${input.email} already exists.`);
      throw err;
    }
  }
  /**
   * Whether the caller may manage this user (its tokens and keys): itself, operators, and an account
   * admin who administers every account the user belongs to. The last part keeps an admin of one
   * account from taking over a user (by issuing it a token) who also works on another account, or an
   * operator. A user who shares no account with the caller does not exist for it (404).
   */
  private async requireUserManager(p: Principal, userId: number) {
    if (p.id === userId || access.isOperator(p)) return;
    const target = await this.db.selectFrom('users as u').leftJoin('user_accounts as ua', 'ua.user_id', 'u.id')
      .select(['u.role', 'ua.account_id']).where('u.id', '=', userId).execute();
    const accounts = target.filter((t) => t.account_id !== null).map((t) => Number(t.account_id));
    if (!accounts.some((a) => p.accountIds.includes(a))) throw notFound(`User ${userId}`);
    const isOperator = target.some((t) => t.role === 'operator');
    if (isOperator || !accounts.every((a) => access.canAdminAccount(p, a))) {
      throw new ApiError(403, 'forbidden', 'Only the user itself, an admin of all its accounts or an operator may do this.');
    }
  }
  async getUser(p: Principal, id: number) {
    const exists = await this.db.selectFrom('users').select('id').where('id', '=', id).executeTakeFirst();
    if (!exists) throw notFound(`User ${id}`);
    await this.requireUserManager(p, id);
    return this.userView(id);
  }
  /** Operators: every user; account admins: themselves and the users of their accounts; members: themselves. */
  async listUsers(p: Principal, page: PageRequest) {
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
    return pageOf(await q.execute(), page, (u) => Number(u.id), (u) => this.userView(Number(u.id)));
  }
  /**
   * A new API token of the user; without `expiresAt` it lasts the operator's default (none unless
   * ESSH_TOKEN_DEFAULT_TTL_S is set). `by`: the administrator issuing it, whose audit event it gets.
   */
  async issueToken(userId: number, name?: string, opts: { expiresAt?: string; by?: Principal } = {}) {
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
  async createToken(p: Principal, userId: number, input: CreateTokenBody = {}) {
    await this.getUser(p, userId);
    return this.issueToken(userId, input.name, { expiresAt: input.expires_at, by: p });
  }
  async listTokens(p: Principal, userId: number, page: PageRequest) {
    await this.getUser(p, userId);
    let q = this.db.selectFrom('api_tokens').select(['id', 'name', 'created_at', 'last_used_at', 'revoked_at', 'expires_at'])
      .where('user_id', '=', userId).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (r) => Number(r.id), (r) => ({ ...r, id: Number(r.id) }));
  }
  async revokeToken(p: Principal, userId: number, tokenId: number) {
    await this.getUser(p, userId);
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
  /** A challenge whose signature by the key proves its holder asks for it to be `userId`'s (lib/ssh-key-challenge.ts). */
  async sshKeyChallenge(p: Principal, userId: number, publicKey: string) {
    await this.getUser(p, userId);
    const parsed = parseAuthorizedKey(publicKey);
    return {
      ...issueKeyChallenge(this.secrets, userId, parsed.fingerprint),
      namespace: SSH_KEY_NAMESPACE, fingerprint: parsed.fingerprint,
    };
  }
  /**
   * Registers a key only with proof that the caller holds its private key: without it, anyone could
   * register a colleague's published key and be the owner of the sessions the colleague opens with it.
   * Whether the key is registered already is said only after the proof, so that the API does not tell
   * a stranger whose public keys essh knows.
   */
  async addSshKey(p: Principal, userId: number, input: AddSshKeyBody) {
    await this.getUser(p, userId);
    const parsed = parseAuthorizedKey(input.public_key);
    checkKeyProof(this.secrets, userId, parsed, input.challenge, input.signature);
    const cap = CAPS.sshKeysPerUser;
    try {
      const row = await insertWithinCap(this.db, { table: 'users', id: userId }, cap,
        async (trx) => Number((await trx.selectFrom('ssh_keys').select((eb) => eb.fn.countAll<number>().as('n'))
          .where('user_id', '=', userId).executeTakeFirstOrThrow()).n),
        () => conflict(`This user already has ${cap} SSH keys, the most a user may have; remove one it no longer uses (DELETE /users/${userId}/ssh_keys/{id}).`),
        async (trx) => {
          const row = await trx.insertInto('ssh_keys')
            .values({ user_id: userId, public_key: parsed.line, fingerprint: parsed.fingerprint, created_at: nowIso() })
            .returningAll().executeTakeFirstOrThrow();
          await recordAudit(trx, p, {
            action: 'ssh_key.added', target: { id: row.id, name: parsed.fingerprint }, accountIds: await accountIdsOfUser(trx, userId),
            fields: ['public_key'], details: { user_id: userId, type: parsed.type, fingerprint: parsed.fingerprint },
          });
          return row;
        });
      return { id: Number(row.id), fingerprint: row.fingerprint, public_key: row.public_key, created_at: row.created_at };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`This key (${parsed.fingerprint}) is already registered.`);
      throw err;
    }
  }
  async deleteSshKey(p: Principal, userId: number, keyId: number) {
    await this.getUser(p, userId);
    await this.db.transaction().execute(async (trx) => {
      const key = await trx.deleteFrom('ssh_keys').where('id', '=', keyId).where('user_id', '=', userId).returning('fingerprint').executeTakeFirst();
      if (!key) throw notFound(`SSH key ${keyId}`);
      await recordAudit(trx, p, {
        action: 'ssh_key.removed', target: { id: keyId, name: key.fingerprint }, accountIds: await accountIdsOfUser(trx, userId),
        fields: ['public_key'], details: { user_id: userId, fingerprint: key.fingerprint },
      });
    });
  }
  async listSshKeys(p: Principal, userId: number, page: PageRequest) {
    await this.getUser(p, userId);
    let q = this.db.selectFrom('ssh_keys').selectAll().where('user_id', '=', userId).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (r) => Number(r.id),
      (r) => ({ id: Number(r.id), fingerprint: r.fingerprint, public_key: r.public_key, created_at: r.created_at }));
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

/** An app's network is the operator's to choose, and some networks no one may choose (CONTRACT §7). */
function checkNetwork(p: Principal, network: string) {
  const why = forbiddenNetworkReason(network);
  if (why) {
    throw new ApiError(400, 'invalid_request', `network "${network}" is not allowed: ${why}. Leave "network" out, or have an operator name a Docker network made for the app.`, { problems: [`body.network: ${why}`] });
  }
  if (!access.isOperator(p)) {
    access.requireOperator(p, 'set an app\'s "network"; leave it out (the app gets essh\'s isolated network)');
  }
}

const KEY_TYPES = new Set([
  'ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com',
]);

const SIGN_HOW = `Sign the challenge with the key: printf %s "$CHALLENGE" | ssh-keygen -Y sign -n ${SSH_KEY_NAMESPACE} -f ~/.ssh/id_ed25519, ` +
  'and pass its output as "signature"; or let the CLI do it all: essh keys add ~/.ssh/id_ed25519.';

/** Refuses, saying why, unless `signature` is the key's SSHSIG over a genuine, current challenge for this user and key. */
function checkKeyProof(secrets: SecretBox, userId: number, key: ReturnType<typeof parseAuthorizedKey>, challenge: string, signature: string) {
  const problem = keyChallengeProblem(secrets, challenge, userId, key.fingerprint);
  if (problem) throw invalid(problem, { problems: [`body.challenge: ${problem}`] });
  const refuse = (why: string) => {
    const message = `The signature is no proof that you hold this key's private key: ${why}. ${SIGN_HOW}`;
    return invalid(message, { problems: [`body.signature: ${why}`] });
  };
  let sig;
  try {
    sig = parseSshSignature(signature);
  } catch (err) {
    if (err instanceof SshSigError) throw refuse(err.message);
    throw err;
  }
  if (!sig.publicKey.equals(key.blob)) {
    throw refuse(`it was made by another key (${sshFingerprint(sig.publicKey)}), not by the key in public_key (${key.fingerprint})`);
  }
  if (sig.namespace !== SSH_KEY_NAMESPACE) throw refuse(`it was made for the namespace "${sig.namespace}", not "${SSH_KEY_NAMESPACE}" (ssh-keygen's -n)`);
  // `jq -r .challenge | ssh-keygen -Y sign` signs the line with its newline: that is the same challenge.
  const text = Buffer.from(challenge, 'utf8');
  if (!verifySshSignature(sig, text, key.line) && !verifySshSignature(sig, Buffer.concat([text, Buffer.from('\n')]), key.line)) {
    throw refuse('it does not verify over the challenge (was another text signed?)');
  }
}

/** Accepts one OpenSSH public key line ("type base64 [comment]"); the fingerprint is OpenSSH's SHA256 form. */
export function parseAuthorizedKey(text: string): { line: string; fingerprint: string; type: string; blob: Buffer } {
  const parts = text.trim().split(/\s+/);
  const [type, b64] = parts;
  const help = 'Paste one OpenSSH public key line, e.g. the contents of ~/.ssh/id_ed25519.pub.';
  if (!type || !b64 || !KEY_TYPES.has(type)) throw invalid(`Not an OpenSSH public key (unknown key type "${type ?? ''}"). ${help}`);
  const blob = Buffer.from(b64, 'base64');
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (len <= 0 || blob.subarray(4, 4 + len).toString('latin1') !== type) {
    throw invalid(`The key data does not match its type ${type}. ${help}`);
  }
  if (type.startsWith('sk-')) {
    throw invalid(`Security-key (${type}) keys cannot sign in to the portal: its SSH library (ssh2) does not verify them. Register an ed25519, ECDSA or RSA key.`);
  }
  const key = sshPublicKey(`${type} ${b64}`);
  if (key instanceof Error) throw invalid(`The key data of this ${type} key cannot be read (${key.message}). ${help}`);
  return { line: parts.slice(0, 3).join(' '), fingerprint: sshFingerprint(blob), type, blob };
}
