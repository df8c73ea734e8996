import type { Selectable } from 'kysely';
import type { AccountsTable, Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { openEnv, sealEnv } from '../domain/app-env.js';
import { grantProblem } from '../domain/grants.js';
import { forbiddenNetworkReason } from '../lib/networks.js';
import type { SecretBox } from '../lib/secrets.js';
import type { CreateAppBody, PatchAppBody } from '../shapes/requests.js';
import type { AccountsService } from './accounts.js';
import { envChanges, recordAudit } from './audit.js';
import { access, type Principal } from './auth.js';
import { ApiError, conflict, forbidden, invalid, isUniqueViolation, notFound } from './errors.js';
import { emptyPage, pageOf, type PageRequest } from './pages.js';

/** Apps: the container settings sessions start from; their env is sealed at rest and shown only to their admins. */
export class AppsService {
  constructor(private readonly db: Db, private readonly secrets: SecretBox, private readonly accounts: AccountsService) {}

  private appsQuery() {
    return this.db.selectFrom('apps as a')
      .innerJoin('accounts as acc', 'acc.id', 'a.account_id')
      .innerJoin('stacks as s', 's.id', 'a.stack_id')
      .selectAll('a').select(['acc.handle as account_handle', 's.name as stack_name']);
  }
  private view(a: Awaited<ReturnType<ReturnType<AppsService['appsQuery']>['executeTakeFirstOrThrow']>>, showEnv: boolean) {
    const env = openEnv(this.secrets, a.env);
    return {
      id: Number(a.id), handle: a.handle, account: a.account_handle, stack: a.stack_name, image: a.image,
      // Env values may be secrets: only those who may manage the app see them.
      env: showEnv ? env : Object.fromEntries(Object.keys(env).map((k) => [k, '[hidden]'])),
      command: a.command ? (JSON.parse(a.command) as string[]) : null,
      working_dir: a.working_dir, user: a.user, network: a.network, warm_pool: Number(a.warm_pool), created_at: a.created_at,
    };
  }
  async create(p: Principal, input: CreateAppBody) {
    const account = await this.accounts.byHandle(p, input.account);
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
      return this.getById(p, Number(row.id));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An app with handle "${input.handle}" already exists; pick another handle.`);
      throw err;
    }
  }
  /** Account admins change the app's container settings; its stack, network and warm pool are the operator's. */
  async patch(p: Principal, handle: string, patch: PatchAppBody) {
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
    return this.getById(p, Number(app.id));
  }
  private async requireGranted(account: Selectable<AccountsTable>, stack: { id: number; name: string }, image: string) {
    const problem = await grantProblem(this.db, account, stack, image);
    if (problem) throw forbidden(`Not granted: ${problem}.`);
  }
  private async getById(p: Principal, id: number) {
    const a = await this.appsQuery().where('a.id', '=', id).executeTakeFirstOrThrow();
    return this.view(a, access.canAdminAccount(p, Number(a.account_id)));
  }
  async get(p: Principal, handle: string) {
    const a = await this.appsQuery().where('a.handle', '=', handle).executeTakeFirst();
    if (!a || !access.canSeeAccount(p, Number(a.account_id))) throw notFound(`App "${handle}"`);
    return this.view(a, access.canAdminAccount(p, Number(a.account_id)));
  }
  async list(p: Principal, page: PageRequest) {
    let q = this.appsQuery().orderBy('a.id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('a.id', '>', page.after);
    if (!access.isOperator(p)) {
      if (p.accountIds.length === 0) return emptyPage<ReturnType<AppsService['view']>>();
      q = q.where('a.account_id', 'in', p.accountIds);
    }
    return pageOf(await q.execute(), page, (a) => Number(a.id), (a) => this.view(a, access.canAdminAccount(p, Number(a.account_id))));
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
