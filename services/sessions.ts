import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { sql } from 'kysely';
import { DEFAULT_HOST_STALE_S } from '../lib/config.js';
import type { Db, DbEngine } from '../lib/db.js';
import type { Metrics } from '../lib/metrics.js';
import { nowIso } from '../lib/db.js';
import { grantProblem } from '../domain/grants.js';
import { planCpus, planLargestContainerMb, planLimit } from '../domain/plans.js';
import { closeOperation, insertOperation } from '../domain/operation-record.js';
import { recordChangedWithin } from '../domain/record-news.js';
import { hashToken, newToken, type SecretBox } from '../lib/secrets.js';
import { openSessionEnv, sealEnv } from '../domain/app-env.js';
import {
  SA,
  TASK_QUEUE,
  sessionWorkflowId,
  terminateSignal,
  type SessionWorkflowInput,
} from '../shapes/session-workflow.js';
import type { EndReason, OperationStatus, SessionState } from '../shapes/enumerations.js';
import type { CreateSessionBody, SessionFilters } from '../shapes/requests.js';
import type { CreatedSession, Operation, Session } from '../shapes/answers.js';
import { announcedHostKey, type AnnouncedHostKey } from '../lib/ssh-host-key.js';
import { placeSession } from './placement.js';
import type { HostRow } from '../journal/tables.js';
import type { ObserverRole } from '../journal/format.js';
import type { sessionWorkflow } from '../workflows/session.js';
import { sessionStaticDetails, sessionSummary } from '../workflows/ui-metadata.js';
import { access, type Principal } from './auth.js';
import { ApiError, conflict, forbidden, invalid, notFound } from './errors.js';
import { emptyPage, pageOf, type Page, type PageRequest } from './pages.js';
import { PerUserRateLimiter } from './rate-limit.js';

export interface SessionTimeouts {
  heartbeatTimeoutS: number;
  connectTimeoutS: number;
  stopGraceS: number;
  pidsLimit: number;
  tokenTtlS: number;
}

export const DEFAULT_CONTAINER_SIZE_MB = 1024;
/** How long a terminate's answer waits for the session to be `ending` (a workflow that is not running never gets there). */
const TERMINATE_ANSWER_WAIT_MS = 5000;

type Admitted = Awaited<ReturnType<SessionsService['admit']>>;
type Issued = ReturnType<SessionsService['issueTerms']>;
type Recorded = Awaited<ReturnType<SessionsService['recordWithinLimit']>>;

/** Everything the API, the portal and the CLI do with sessions goes through here. */
export class SessionsService {
  private readonly createRate: PerUserRateLimiter;

  constructor(
    private readonly deps: {
      db: Db;
      engine: DbEngine;
      client: Client;
      /**
       * A client on the same connection as a main worker of this process: session workflows are then
       * started eagerly (the first workflow task comes back with the start and runs here at once).
       */
      eagerClient?: Client;
      instanceId: string;
      /** Seals a session's extra env when it is created, and opens it for the portal that starts its program. */
      secrets: SecretBox;
      timeouts: SessionTimeouts;
      ssh: { publicHost: string; port: number; hostKey?: AnnouncedHostKey };
      /** Session creations per token (or SSH user) per minute; 0 or absent: no limit. */
      createRatePerMinute?: number;
      /** A host reporting less free disk than this takes no new session (services/placement.ts). */
      minFreeDiskBytes?: number;
      /** A host silent this long takes no new session (ESSH_HOST_STALE_S); 45 s if absent. */
      hostStaleS?: number;
      /** Sessions accepted and refused (lib/metrics.ts). */
      metrics?: Pick<Metrics, 'sessionsCreated' | 'sessionCreateRejected'>;
    },
  ) {
    this.createRate = new PerUserRateLimiter(deps.db, {
      action: 'session-create', perMinute: deps.createRatePerMinute ?? 0,
      refusal: (who, n) => `Too many sessions created by ${who}: at most ${n} a minute.`,
    });
  }

  private rows() {
    return this.deps.db
      .selectFrom('operations as o')
      .innerJoin('apps as a', 'a.id', 'o.app_id')
      .innerJoin('accounts as acc', 'acc.id', 'o.account_id')
      .innerJoin('users as u', 'u.id', 'o.user_id')
      .selectAll('o')
      .select(['a.handle as app_handle', 'acc.handle as account_handle', 'u.name as user_name', 'u.email as user_email']);
  }

  /**
   * Starts a session (API and portal alike); each acceptance and refusal is counted. A portal on a stack
   * host passes `onHost`: the session it attaches to must run on its own host (services/placement.ts).
   */
  async create(principal: Principal, appHandle: string, body: CreateSessionBody, placement: { onHost?: string } = {}) {
    try {
      return await this.createSession(principal, appHandle, body, placement);
    } catch (err) {
      this.deps.metrics?.sessionCreateRejected.inc({ reason: err instanceof ApiError ? err.code : 'internal' });
      throw err;
    }
  }

  /** The steps of a creation, in order: each may refuse it, and none after the record is written does. */
  private async createSession(
    principal: Principal,
    appHandle: string,
    body: CreateSessionBody,
    placement: { onHost?: string },
  ): Promise<CreatedSession> {
    const admitted = await this.admit(principal, appHandle, body);
    const issued = this.issueTerms(admitted.app);
    const recorded = await this.recordWithinLimit(principal, admitted, body, issued, placement);
    await this.startWorkflow(principal, admitted, body, issued, recorded);
    this.deps.metrics?.sessionsCreated.inc({ stack: admitted.app.stack_name });
    return this.createdView(principal, recorded, issued);
  }

  /** Admission: the app is the caller's to see, the caller is under its rate, the size fits the plan, the app is granted. */
  private async admit(principal: Principal, appHandle: string, body: CreateSessionBody) {
    const { db } = this.deps;
    const app = await db
      .selectFrom('apps as a')
      .innerJoin('stacks as s', 's.id', 'a.stack_id')
      .innerJoin('accounts as acc', 'acc.id', 'a.account_id')
      .select([
        'a.id', 'a.handle', 'a.account_id', 'a.image', 'a.stack_id', 's.name as stack_name', 's.max_session_duration_s',
        'acc.handle as account_handle', 'acc.plan', 'acc.max_concurrent_sessions', 'acc.image_prefixes',
      ])
      .where('a.handle', '=', appHandle)
      .executeTakeFirst();
    if (!app || !access.canSeeAccount(principal, Number(app.account_id))) throw notFound(`App "${appHandle}"`);
    await this.createRate.take(principal);

    const accountId = Number(app.account_id);
    const containerSizeMb = body.container_size_mb ?? DEFAULT_CONTAINER_SIZE_MB;
    const largest = planLargestContainerMb(app.plan);
    if (containerSizeMb > largest) {
      throw invalid(
        `container_size_mb ${containerSizeMb} is more than plan ${app.plan} allows: at most ${largest} MB. Ask for ${largest} or less, or for a larger plan.`,
        { problems: [`body.container_size_mb: at most ${largest} MB on plan ${app.plan}`], largest_container_mb: largest },
      );
    }
    const notGranted = await grantProblem(
      db, { id: accountId, handle: app.account_handle, image_prefixes: app.image_prefixes }, { id: Number(app.stack_id), name: app.stack_name }, app.image,
    );
    if (notGranted) throw forbidden(`App ${app.handle} cannot start sessions: ${notGranted}.`);
    return { app, accountId, containerSizeMb };
  }

  /** The session's one-time token and its times: created now, expiring at the stack's maximum duration. */
  private issueTerms(app: Admitted['app']) {
    const created = new Date();
    return {
      token: newToken('esst'),
      createdAt: created.toISOString(),
      expiresAt: new Date(created.getTime() + Number(app.max_session_duration_s) * 1000).toISOString(),
      tokenExpiresAt: new Date(created.getTime() + this.deps.timeouts.tokenTtlS * 1000).toISOString(),
    };
  }

  /**
   * The cap: the count of the account's live sessions and the insert of this one (its host, its record,
   * its token) are one transaction, serialised per account, so concurrent requests can never exceed the
   * limit. A slot frees the moment the workflow records the session as ended.
   */
  private async recordWithinLimit(
    principal: Principal, { app, accountId, containerSizeMb }: Admitted, body: CreateSessionBody, issued: Issued, placement: { onHost?: string },
  ) {
    const { db, engine } = this.deps;
    const limit = app.max_concurrent_sessions ?? planLimit(app.plan);
    // The session's extra env is sealed here, never put in the workflow's input.
    const sealedEnv = body.env && Object.keys(body.env).length > 0 ? sealEnv(this.deps.secrets, body.env) : null;
    return db.transaction().execute(async (trx) => {
      if (engine === 'postgres') {
        // The account's row lock: creates on other accounts go on in parallel.
        await trx.selectFrom('accounts').select('id').where('id', '=', accountId).forUpdate().execute();
      } else {
        // SQLite has one writer, but a plain BEGIN only takes the write lock at the first write: a
        // no-op write first makes the count and the insert atomic across processes too.
        await trx.updateTable('accounts').set({ id: sql`id` }).where('id', '=', accountId).execute();
      }
      const active = await trx
        .selectFrom('operations')
        .select('id')
        .where('account_id', '=', accountId)
        // A session stops counting once it is ending: its client has its exit status, or a terminate was answered.
        .where('state', 'not in', ['ending', 'ended'])
        .orderBy('id')
        .execute();
      if (active.length >= limit) {
        const ids = active.map((r) => Number(r.id));
        throw new ApiError(
          429,
          'plan_limit',
          `Account ${app.account_handle} is at its limit of ${limit} concurrent session${limit === 1 ? '' : 's'} ` +
            `(plan ${app.plan}); active: ${ids.map((i) => `session ${i}`).join(', ')}. ` +
            `End one (essh terminate ID) or ask for a higher limit.`,
          { active_sessions: ids, limit },
        );
      }
      // The host, in the same transaction: its count of live sessions and this insert are one step.
      const host = await placeSession(trx, engine, {
        stack: app.stack_name, containerSizeMb, minFreeDiskBytes: this.deps.minFreeDiskBytes ?? 0, onHost: placement.onHost,
        hostStaleS: this.deps.hostStaleS ?? DEFAULT_HOST_STALE_S,
      });
      const id = await insertOperation(trx, {
        accountId, appId: Number(app.id), userId: principal.id, stack: app.stack_name, command: body.command ?? null,
        containerSizeMb, createdAt: issued.createdAt, expiresAt: issued.expiresAt, sealedEnv, detached: body.detach === true,
        hostId: host?.host_id ?? null,
      });
      await trx
        .insertInto('session_tokens')
        .values({ operation_id: id, token_hash: hashToken(issued.token), expires_at: issued.tokenExpiresAt })
        .execute();
      return { operationId: id, host };
    });
  }

  /** The session's workflow; if Temporal cannot start it, the record is closed and the slot freed. */
  private async startWorkflow(
    principal: Principal, { app, accountId, containerSizeMb }: Admitted, body: CreateSessionBody, issued: Issued, { operationId, host }: Recorded,
  ) {
    const { timeouts } = this.deps;
    const input: SessionWorkflowInput = {
      operationId,
      app: { id: Number(app.id), handle: app.handle },
      account: { id: accountId, handle: app.account_handle },
      user: { id: principal.id, name: principal.name, email: principal.email },
      stack: app.stack_name,
      command: body.command ?? null,
      containerSizeMb,
      cpus: planCpus(app.plan),
      instanceId: this.deps.instanceId,
      createdAt: issued.createdAt,
      expiresAt: issued.expiresAt,
      heartbeatTimeoutS: timeouts.heartbeatTimeoutS,
      connectTimeoutS: timeouts.connectTimeoutS,
      stopGraceS: timeouts.stopGraceS,
      pidsLimit: timeouts.pidsLimit,
      ...(body.tty === false ? { tty: false } : {}),
      ...(body.start_on_connect ? { startOnAttach: true } : {}),
      ...(body.detach ? { detach: true } : {}),
      ...(host ? { hostId: host.host_id } : {}),
    };
    try {
      await (this.deps.eagerClient ?? this.deps.client).workflow.start<typeof sessionWorkflow>('sessionWorkflow', {
        taskQueue: TASK_QUEUE,
        requestEagerStart: this.deps.eagerClient !== undefined,
        workflowId: sessionWorkflowId(operationId),
        args: [input],
        // What the Temporal UI shows of it (handles and ids only); the workflow keeps its current details.
        staticSummary: sessionSummary(input),
        staticDetails: sessionStaticDetails(input),
        // No e-mail or other personal data here: search attributes are visible to anyone with UI access.
        typedSearchAttributes: [
          { key: SA.app, value: app.handle },
          { key: SA.account, value: app.account_handle },
          { key: SA.userId, value: String(principal.id) },
          { key: SA.operationId, value: operationId },
          { key: SA.state, value: 'provisioning' },
        ],
      });
    } catch (err) {
      await closeOperation(this.deps.db, operationId, { reason: 'provision_failed', message: 'the session workflow could not be started' });
      throw new ApiError(503, 'unavailable', `The session could not be started (Temporal: ${(err as Error).message}). Try again shortly.`);
    }
  }

  /** The session as the caller sees it, with how to connect: to its host's portal if it has one, else to this one's. */
  private async createdView(principal: Principal, { operationId, host }: Recorded, issued: Issued): Promise<CreatedSession> {
    const session = await this.get(principal, operationId);
    return { ...session, connect: this.connectBlock(`session-${operationId}`, host, issued.token, issued.tokenExpiresAt, '-t') };
  }

  /** How to reach the portal of the session's host (this stack's portal when it has none) as `user`, with a one-time token. */
  private connectBlock(user: string, host: HostRow | null | undefined, token: string, tokenExpiresAt: string, sshFlags: string) {
    const { publicHost, port, hostKey } = host?.ssh_host && host.ssh_port && host.ssh_host_key
      ? { publicHost: host.ssh_host, port: Number(host.ssh_port), hostKey: announcedHostKey(host.ssh_host_key) }
      : this.deps.ssh;
    return {
      host: publicHost,
      port,
      user,
      token,
      token_expires_at: tokenExpiresAt,
      ssh_command: `ssh ${sshFlags} -p ${port} ${user}@${publicHost}`,
      ...(hostKey ? { host_key: hostKey.line, host_key_fingerprint: hostKey.fingerprint } : {}),
    };
  }

  /**
   * The live session `principal` may watch (follow its output read-only), and as whom: its owner, an
   * admin of its account, or an operator, as for a terminate. The API's watch tokens and the portal's
   * `watch-<id>` logins both ask here; a refusal is an ApiError whose message says why.
   */
  async watchable(principal: Principal, id: number): Promise<{ row: Row; role: ObserverRole }> {
    const row = await this.visibleRow(principal, id);
    if (!access.canControlSession(principal, ownership(row))) throw forbidden('Only the session owner, an account admin or an operator may watch it.');
    if (row.state === 'ending' || row.state === 'ended') {
      throw conflict(`Session ${id} is not live: it has ${row.state === 'ended' ? 'ended' : 'been ending'} (${row.end_reason ?? 'no reason yet'}); ` +
        `its recording shows what it printed: essh recording ${id} --play.`);
    }
    if (Number(row.detached) === 1) {
      throw conflict(`Session ${id} is a detached job with no terminal to watch; follow its output with essh logs -f ${id}.`);
    }
    const role: ObserverRole = Number(row.user_id) === principal.id ? 'owner' : principal.role === 'operator' ? 'operator' : 'account_admin';
    return { row, role };
  }

  /**
   * A one-time token to watch a live session through its host's portal as `watch-<id>` (`essh watch`):
   * it is the caller's (the portal takes the observer to be the caller), short-lived, and attaches
   * nobody as the session's client.
   */
  async watch(principal: Principal, id: number): Promise<CreatedSession> {
    const { row } = await this.watchable(principal, id);
    const created = Date.now();
    const token = newToken('esst');
    const expiresAt = new Date(created + this.deps.timeouts.tokenTtlS * 1000).toISOString();
    await this.deps.db.insertInto('session_tokens')
      .values({ operation_id: id, token_hash: hashToken(token), expires_at: expiresAt, watcher_id: principal.id }).execute();
    const host = row.host_id ? await this.deps.db.selectFrom('hosts').selectAll().where('host_id', '=', row.host_id).executeTakeFirst() : undefined;
    return { ...toSession(row), connect: this.connectBlock(`watch-${id}`, host, token, expiresAt, '-t') };
  }

  private async visibleRow(principal: Principal, id: number) {
    const row = await this.rows().where('o.id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeSession(principal, ownership(row))) {
      throw notFound(`Session ${id}`);
    }
    return row;
  }

  async get(principal: Principal, id: number): Promise<Session> {
    return toSession(await this.visibleRow(principal, id));
  }

  /** The sessions the caller may see, newest first, one page at a time. */
  async list(principal: Principal, filter: SessionFilters, page: PageRequest): Promise<Page<Session>> {
    let q = this.rows().orderBy('o.id', 'desc').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('o.id', '<', page.after);
    if (filter.app) q = q.where('a.handle', '=', filter.app);
    if (filter.state) q = q.where('o.state', '=', filter.state);
    if (filter.user !== undefined) q = q.where('o.user_id', '=', filter.user);
    if (principal.role !== 'operator') {
      if (principal.accountIds.length === 0) return emptyPage();
      q = q.where('o.account_id', 'in', principal.accountIds);
      if (principal.role === 'member') q = q.where('o.user_id', '=', principal.id);
    }
    return pageOf(await q.execute(), page, (r) => Number(r.id), toSession);
  }

  /**
   * Asks the session's workflow to end (202: it ends and cleans up asynchronously). Answers once the
   * record says `ending`, or after a few seconds whatever it says: from then on the session no
   * longer holds a plan slot (CONTRACT §8), so a create right after the answer is accepted.
   */
  async terminate(principal: Principal, id: number, reason?: string): Promise<Session> {
    const row = await this.visibleRow(principal, id);
    if (!access.canControlSession(principal, ownership(row))) throw forbidden('Only the session owner, an account admin or an operator may terminate it.');
    if (row.state === 'ended') return toSession(row);
    try {
      await this.deps.client.workflow
        .getHandle(sessionWorkflowId(id))
        .signal(terminateSignal, { reason: reason ?? 'terminated by request', by: principal.email });
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      // The workflow is gone already; the reconciler closes the record.
      return toSession(row);
    }
    const deadline = Date.now() + TERMINATE_ANSWER_WAIT_MS;
    for (;;) {
      const now = await this.rows().where('o.id', '=', id).executeTakeFirstOrThrow();
      if (now.state === 'ending' || now.state === 'ended' || Date.now() > deadline) return toSession(now);
      await recordChangedWithin(id, 20);
    }
  }

  async getOperation(principal: Principal, id: number): Promise<Operation> {
    const row = await this.rows().where('o.id', '=', id).executeTakeFirst();
    if (!row || !access.canSeeSession(principal, ownership(row))) {
      throw notFound(`Operation ${id}`);
    }
    return toOperation(row);
  }

  /** An app's Operation records the caller may see, newest first, one page at a time. */
  async listAppOperations(principal: Principal, appHandle: string, page: PageRequest): Promise<Page<Operation>> {
    const app = await this.deps.db.selectFrom('apps').select(['id', 'account_id']).where('handle', '=', appHandle).executeTakeFirst();
    if (!app || !access.canSeeAccount(principal, Number(app.account_id))) throw notFound(`App "${appHandle}"`);
    let q = this.rows().where('o.app_id', '=', app.id).orderBy('o.id', 'desc').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('o.id', '<', page.after);
    if (principal.role === 'member') q = q.where('o.user_id', '=', principal.id);
    return pageOf(await q.execute(), page, (r) => Number(r.id), toOperation);
  }

  /** The session's extra env, opened: what the portal adds to its program's environment when it starts it. */
  extraEnv(operationId: number): Promise<Record<string, string>> {
    return openSessionEnv(this.deps.db, this.deps.secrets, operationId);
  }

  /**
   * The portal's check of a session token: valid, unexpired, unused, and for this session. It is
   * marked used in the same statement, so it works exactly once. Answers the token's row (the portal
   * checks it again, expiry included, before each new channel of the connection it opened), or null.
   * With `watch`, only a watch token (POST /sessions/{id}/watch), whose row also names its observer;
   * without, only the session's own attach token: neither stands in for the other.
   */
  async redeemSessionToken(operationId: number, token: string, opts: { watch?: boolean } = {}): Promise<{ tokenId: number; watcherId: number | null } | null> {
    const now = nowIso();
    // A read first: a wrong token (anyone on the internet can send one) never becomes a write.
    const match = await this.deps.db.selectFrom('session_tokens').select(['id', 'watcher_id'])
      .where('operation_id', '=', operationId)
      .where('token_hash', '=', hashToken(token))
      .where('used_at', 'is', null)
      .where('watcher_id', opts.watch ? 'is not' : 'is', null)
      .where(sql<boolean>`expires_at > ${now}`)
      .executeTakeFirst();
    if (!match) return null;
    const res = await this.deps.db.updateTable('session_tokens').set({ used_at: now })
      .where('id', '=', match.id).where('used_at', 'is', null).executeTakeFirst();
    return Number(res.numUpdatedRows) === 1 ? { tokenId: Number(match.id), watcherId: match.watcher_id === null ? null : Number(match.watcher_id) } : null;
  }
}

type Row = Awaited<ReturnType<ReturnType<SessionsService['rows']>['executeTakeFirstOrThrow']>>;

/** Whose a session is, as the access rules (services/auth.ts) take it. */
const ownership = (r: { account_id: number; user_id: number }) => ({ account_id: Number(r.account_id), user_id: Number(r.user_id) });

const parseCommand = (c: string | null) => (c ? (JSON.parse(c) as string[]) : null);

function toSession(r: Row): Session {
  const id = Number(r.id);
  return {
    id,
    operation_id: id,
    workflow_id: r.workflow_id ?? sessionWorkflowId(id),
    app: r.app_handle,
    account: r.account_handle,
    stack: r.stack,
    user: { id: Number(r.user_id), name: r.user_name, email: r.user_email },
    state: r.state as SessionState,
    end_reason: (r.end_reason as EndReason | null) ?? null,
    end_message: r.end_message,
    ended_by: r.ended_by,
    exit_code: r.exit_code,
    command: parseCommand(r.command),
    detached: Number(r.detached) === 1,
    container_size_mb: r.container_size_mb,
    container_id: r.container_id,
    created_at: r.created_at,
    connected_at: r.connected_at,
    ended_at: r.ended_at,
    expires_at: r.expires_at,
  };
}

function toOperation(r: Row): Operation {
  const id = Number(r.id);
  return {
    id,
    type: 'execute',
    status: r.status as OperationStatus,
    app: r.app_handle,
    user_name: r.user_name,
    user_email: r.user_email,
    command: parseCommand(r.command),
    container_size_mb: r.container_size_mb,
    session_id: id,
    end_reason: (r.end_reason as EndReason | null) ?? null,
    exit_code: r.exit_code,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}
