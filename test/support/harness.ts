import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import Docker from 'dockerode';
import Long from 'long';
import { sql } from 'kysely';
import { afterAll, beforeAll, inject } from 'vitest';
import { loadConfig, type Config } from '../../lib/config.js';
import { imageRepository } from '../../domain/grants.js';
import { createLogger } from '../../lib/log.js';
import { SEARCH_ATTRIBUTE_KEYS, sessionWorkflowId } from '../../shapes/session-workflow.js';
import { startRuntime, type Runtime, type RuntimeParts } from '../../server/runtime.js';
import { DEMO_IMAGE } from '../../server/seed.js';
import { removeInstallationFromEngine, sessionContainerName } from '../../host/containers.js';
import { ApiClient } from './api-client.js';
import { noteInstallation } from './installations.js';
import { isPostgresUrl, type Db, type DbEngine } from '../../lib/db.js';
import pg from 'pg';

export const docker = new Docker();
export { ApiClient, type ApiResponse } from './api-client.js';
export { DEMO_IMAGE };

/** A fresh namespace on the run's dev server, with essh's search attributes registered in it. */
export async function createNamespace(address: string): Promise<string> {
  const namespace = `essh-test-${randomBytes(4).toString('hex')}`;
  const conn = await Connection.connect({ address });
  try {
    await conn.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86_400) } });
    const types = temporal.api.enums.v1.IndexedValueType;
    const searchAttributes = Object.fromEntries(
      SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, k.type === 'INT' ? types.INDEXED_VALUE_TYPE_INT : types.INDEXED_VALUE_TYPE_KEYWORD]),
    );
    for (let attempt = 0; ; attempt++) {
      try {
        await conn.operatorService.addSearchAttributes({ namespace, searchAttributes });
        break;
      } catch (err) {
        if (attempt > 40) throw err;
        await sleep(250); // the namespace takes a moment to become visible
      }
    }
  } finally {
    await conn.close();
  }
  return namespace;
}

export interface TestStack {
  runtime: Runtime;
  config: Config;
  api: ApiClient;
  /** The operator's token. */
  adminToken: string;
  url: string;
  namespace: string;
  dataDir: string;
  databaseUrl: string;
  stop(): Promise<void>;
}

export function workflowBundle() {
  return { code: readFileSync(inject('workflowBundlePath'), 'utf8'), sourceMap: '' };
}

/** The parts of a stack whose hosts are processes of the file's own: the API and the main worker (workflows, records) only. */
export const apiAndWorkflows = (): RuntimeParts => ({ api: true, worker: true, workflowBundle: workflowBundle() });

/** A CLI configuration in `dir` logged in to the stack with `token` (0600, as `essh login` writes it); its path. */
export async function loggedInCliConfig(dir: string, stack: TestStack, token: string): Promise<string> {
  const configFile = path.join(dir, 'config', 'essh.json');
  await mkdir(path.dirname(configFile), { recursive: true });
  await writeFile(configFile, JSON.stringify({ api_url: stack.url, token }), { mode: 0o600 });
  return configFile;
}

/**
 * A real essh runtime for one test file: its own data dir and database, its own Temporal namespace
 * on the run's dev server, the local Docker engine. Short timeouts unless the test says otherwise.
 */
export async function startTestStack(
  opts: {
    env?: Record<string, string>; parts?: RuntimeParts; namespace?: string; hostStacks?: string[];
    /** A Temporal server of the test's own (one it stops and starts, say) instead of the run's. */
    temporalAddress?: string;
    /** Start on the data dir and database of an earlier stack whose runtime was stopped (a restart). */
    reuse?: Pick<TestStack, 'dataDir' | 'databaseUrl'>;
    /** Where the runtime's own log goes (a test that reads it); stdout by default. */
    logDestination?: { write(line: string): void };
  } = {},
): Promise<TestStack> {
  const dataDir = opts.reuse?.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'essh-stack-')));
  const testDb = opts.reuse ? { url: opts.reuse.databaseUrl, drop: async () => {} } : await createTestDatabase(dataDir);
  const temporalAddress = opts.temporalAddress ?? inject('temporalAddress');
  const namespace = opts.namespace ?? (await createNamespace(temporalAddress));
  const config = loadConfig({
    ...process.env,
    ESSH_DATA_DIR: dataDir,
    DATABASE_URL: testDb.url,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: namespace,
    ESSH_API_PORT: '0',
    ESSH_SSH_PORT: '0',
    ESSH_METRICS_PORT: '0',
    ESSH_HEARTBEAT_TIMEOUT_S: '4',
    ESSH_PORTAL_HEARTBEAT_S: '1',
    ESSH_CONNECT_TIMEOUT_S: '120',
    ESSH_STOP_GRACE_S: '2',
    ESSH_RECONCILE_INTERVAL_S: '2',
    ESSH_LOG_LEVEL: 'warn',
    // Tests create sessions and poll recordings in bursts; the rate limits have their own tests.
    ESSH_SESSION_CREATE_RATE: '0',
    ESSH_RECORDING_DOWNLOAD_RATE: '0',
    // The tests' drain receivers listen on 127.0.0.1; the refusal of such targets has its own test.
    ESSH_DRAINS_ALLOW_PRIVATE: '1',
    ...opts.env,
  });
  const runtime = await startRuntime(
    config,
    opts.parts ?? { api: true, worker: true, hostStacks: opts.hostStacks ?? ['local'], portal: true, workflowBundle: workflowBundle() },
    createLogger(config.logLevel, opts.logDestination),
  );
  rememberInstallation(runtime.instanceId);
  // A restarted stack keeps its ids: moving the sequence back could reuse one.
  if (!opts.reuse) await startOperationIdsAt(runtime.db, runtime.engine, uniqueIdBase());
  const admin = await seedOperator(runtime);
  const url = runtime.apiUrl ?? '';
  return {
    runtime,
    config,
    api: new ApiClient(url),
    adminToken: admin,
    url,
    namespace,
    dataDir,
    databaseUrl: testDb.url,
    async stop() {
      await runtime.stop();
      // Sessions still open when a file ends would leave their containers on the shared engine, with
      // no reconciler of this installation left to remove them; and its network would hold one of the
      // engine's few dozen address ranges.
      await removeInstallationFromEngine(docker, runtime.instanceId);
      await testDb.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

type TestStackOptions = NonNullable<Parameters<typeof startTestStack>[0]>;

/**
 * The test file's stack, the one way a file gets one: started before the file's own `beforeAll`s
 * (register it first) and, after the file's own `afterAll`s (vitest runs them in reverse), every
 * session still open is ended and the stack stopped. The answer stands for the stack once started.
 * `opts` may be a function for options only known in a hook. `endSessions: false` for a file whose
 * sessions run on processes of its own, which it stops (and ends the sessions of) itself.
 */
export function useTestStack(
  opts: TestStackOptions | (() => TestStackOptions | Promise<TestStackOptions>) = {},
  cleanUp: { endSessions?: boolean } = {},
): TestStack {
  let started: TestStack | undefined;
  let endSessions = false;
  beforeAll(async () => {
    const resolved = typeof opts === 'function' ? await opts() : opts;
    // Without a worker of its own, the stack's sessions run on processes the file stops before this clean-up.
    endSessions = cleanUp.endSessions ?? (!resolved.parts || !!resolved.parts.worker);
    started = await startTestStack(resolved);
  });
  afterAll(async () => {
    if (!started) return;
    if (endSessions) await endAllSessions(started);
    await started.stop();
  });
  return standIn(() => started, 'the test stack');
}

/**
 * What a hook starts, for the file's tests and hooks to use as if it were there from the start: it
 * throws, naming `what`, when used before the hook has run.
 */
export function standIn<T extends object>(current: () => T | undefined, what: string): T {
  const it = () => {
    const value = current();
    if (!value) throw new Error(`${what} is not started yet: use it in a test or in a hook registered after the one that starts it`);
    return value;
  };
  return new Proxy({} as T, {
    // `then` is asked by `await` and by vitest's printing of values: none of these is a promise.
    get: (_, key) => (key === 'then' ? undefined : Reflect.get(it(), key)),
    set: (_, key, value) => Reflect.set(it(), key, value),
    has: (_, key) => Reflect.has(it(), key),
    ownKeys: () => Reflect.ownKeys(it()),
    getOwnPropertyDescriptor: (_, key) => Reflect.getOwnPropertyDescriptor(it(), key),
  });
}

/**
 * For a file whose sessions run on processes of its own (hosts, workers): ends the sessions while
 * those can still end them (if any was started; a failure is the test's to report, not the clean-up's),
 * then stops the processes.
 */
export async function endSessionsAndStop(stack: TestStack, processes: ({ stop(): Promise<unknown> } | undefined)[]) {
  if (processes.some(Boolean)) await endAllSessions(stack).catch(() => undefined);
  for (const p of processes) await p?.stop();
}

/** Notes an installation the run made, for the run's teardown to remove what is left of it (test/support/installations.ts). */
export function rememberInstallation(installation: string) {
  noteInstallation(inject('workflowBundlePath'), installation);
}

/**
 * The test file's own database: a fresh PostgreSQL database on the server named by
 * ESSH_TEST_DATABASE_URL (or a postgres:// DATABASE_URL), dropped by `drop()`; else a SQLite file in
 * the data dir.
 */
async function createTestDatabase(dataDir: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const server = process.env.ESSH_TEST_DATABASE_URL || (isPostgresUrl(process.env.DATABASE_URL ?? '') ? process.env.DATABASE_URL : undefined);
  if (!server) return { url: path.join(dataDir, 'essh.sqlite'), drop: async () => {} };
  const name = `essh_test_${randomBytes(6).toString('hex')}`;
  // A server URL without a database names none; `postgres` is the one every server has.
  const maintenance = new URL(server);
  if (maintenance.pathname.length <= 1) maintenance.pathname = '/postgres';
  const admin = async (statement: string) => {
    const client = new pg.Client({ connectionString: maintenance.toString() });
    await client.connect();
    try {
      await client.query(statement);
    } finally {
      await client.end();
    }
  };
  await admin(`create database ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) };
}

/**
 * Container names are `essh-<operation id>` on one shared engine, so each test database starts its ids
 * at a random high base: concurrent runs (and leftovers of earlier ones) never collide.
 */
export function uniqueIdBase(): number {
  return 1_000_000 + Math.floor(Math.random() * 1_000_000_000);
}

export async function startOperationIdsAt(db: Db, engine: DbEngine, base: number) {
  if (engine === 'postgres') {
    await sql`select setval(pg_get_serial_sequence('operations', 'id'), ${base})`.execute(db);
  } else {
    // sqlite_sequence has no key on its name: "insert or replace" would add a second row, which SQLite ignores.
    await sql`delete from sqlite_sequence where name = 'operations'`.execute(db);
    await sql`insert into sqlite_sequence (name, seq) values ('operations', ${base})`.execute(db);
  }
}

async function seedOperator(runtime: Runtime): Promise<string> {
  const now = new Date().toISOString();
  const user = await runtime.db
    .insertInto('users')
    .values({ name: 'Test Operator', email: `operator-${randomBytes(3).toString('hex')}@example.com`, role: 'operator', created_at: now })
    .returning('id')
    .executeTakeFirstOrThrow();
  const { token } = await runtime.admin.tokens.issue(Number(user.id), 'test');
  await runtime.db
    .insertInto('stacks')
    .values({ name: 'local', max_session_duration_s: 604_800, dedicated: 0, created_at: now })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
  return token;
}

/** An account with one app on `stack` and a member user; returns the member's token. */
export async function createTenant(
  stack: TestStack,
  opts: { account?: string; plan?: string; max?: number; app?: string; image?: string; stackName?: string; env?: Record<string, string> } = {},
) {
  const suffix = randomBytes(3).toString('hex');
  const account = opts.account ?? `acct-${suffix}`;
  const app = opts.app ?? `app-${suffix}`;
  const admin = stack.adminToken;
  const a = await stack.api.post('/accounts', admin, {
    handle: account, plan: opts.plan ?? 'scale', image_prefixes: [imageRepository(opts.image ?? DEMO_IMAGE)],
    ...(opts.max !== undefined ? { max_concurrent_sessions: opts.max } : {}),
  });
  if (a.status !== 201) throw new Error(`creating account: ${a.status} ${JSON.stringify(a.body)}`);
  // A dedicated stack serves only the accounts it is granted to.
  if (opts.stackName) {
    const g = await stack.api.request('PATCH', `/accounts/${account}`, admin, { stacks: [opts.stackName] });
    if (g.status !== 200) throw new Error(`granting stack ${opts.stackName}: ${g.status} ${JSON.stringify(g.body)}`);
  }
  const ap = await stack.api.post('/apps', admin, {
    handle: app, account, stack: opts.stackName ?? 'local', image: opts.image ?? DEMO_IMAGE,
    env: opts.env ?? { APP_ENV: 'test', DATABASE_URL: 'postgres://app@db/app' }, working_dir: '/app',
  });
  if (ap.status !== 201) throw new Error(`creating app: ${ap.status} ${JSON.stringify(ap.body)}`);
  const u = await stack.api.post('/users', admin, { name: `Member ${suffix}`, email: `member-${suffix}@example.com`, role: 'member', accounts: [account] });
  if (u.status !== 201) throw new Error(`creating user: ${u.status} ${JSON.stringify(u.body)}`);
  return { account, app, token: u.body.token as string, user: u.body as { id: number; email: string; name: string } };
}

export { sleep };

/** Polls until `check` returns a value other than undefined/false, or fails with the last value seen. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${String((last as Error)?.message ?? JSON.stringify(last))}`);
    await sleep(everyMs);
  }
}

export async function waitForState(stack: TestStack, token: string, id: number, state: string, timeoutMs = 30_000) {
  let last = '';
  try {
    return await waitFor(`session ${id} to be ${state}`, async () => {
      const r = await stack.api.get(`/sessions/${id}`, token);
      last = `${r.body?.state} ${r.body?.end_reason ?? ''} ${r.body?.end_message ?? ''}`;
      return r.body?.state === state ? r.body : undefined;
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message} (it was: ${last})`);
  }
}

export async function containerExists(nameOrId: string): Promise<boolean> {
  try {
    await docker.getContainer(nameOrId).inspect();
    return true;
  } catch (err) {
    if ((err as any)?.statusCode === 404) return false;
    throw err;
  }
}

/** Ends every session this file started (also after a failed test), so no container outlives it. */
export async function endAllSessions(s: TestStack, timeoutMs = 90_000) {
  const open = (await s.api.listAll<{ id: number; state: string }>('/sessions', s.adminToken)).filter((x) => x.state !== 'ended');
  await Promise.all(open.map((x) => s.api.post(`/sessions/${x.id}/terminate`, s.adminToken, { reason: 'test clean-up' })));
  let stillOpen: { id: number; state: string }[] = [];
  try {
    await waitFor('every session to end', async () => {
      stillOpen = (await s.api.listAll<{ id: number; state: string }>('/sessions', s.adminToken)).filter((x) => x.state !== 'ended');
      return stillOpen.length === 0;
    }, timeoutMs, 500);
  } catch (err) {
    // Which sessions, in which state, and what their workflows wait for: the phase the wait gave up in.
    const waits = await Promise.all(stillOpen.slice(0, 5).map((x) => whatSessionWaitsFor(s, x.id, x.state)));
    throw new Error(`${(err as Error).message}; ${stillOpen.length} not ended: ${waits.join('; ')}`);
  }
}

/**
 * A session's state and what its workflow waits for (its status, pending activities, a workflow task
 * not yet completed and its attempt, the last events of its history): the phase a wait gave up in.
 */
export async function whatSessionWaitsFor(s: TestStack, id: number, state: string): Promise<string> {
  const handle = s.runtime.client.workflow.getHandle(sessionWorkflowId(id));
  const d = await handle.describe().catch((e) => e as Error);
  if (d instanceof Error) return `${id} ${state} (workflow: ${d.message})`;
  const pending = (d.raw.pendingActivities ?? []).map((a) =>
    `${a.activityType?.name} attempt ${a.attempt} ${temporal.api.enums.v1.PendingActivityState[a.state ?? 0]}`);
  const task = d.raw.pendingWorkflowTask;
  const taskNote = task ? `; a workflow task ${temporal.api.enums.v1.PendingWorkflowTaskState[task.state ?? 0]}, attempt ${task.attempt}` : '';
  const history = await handle.fetchHistory().catch(() => null);
  const last = (history?.events ?? []).slice(-6).map((e) => temporal.api.enums.v1.EventType[e.eventType ?? 0]?.replace(/^EVENT_TYPE_/, '')).join(' > ');
  return `${id} ${state} (workflow ${d.status.name}; pending: ${pending.join(', ') || 'none'}${taskNote}; last events: ${last || 'unknown'})`;
}

export interface SessionRun {
  id: number;
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number | null;
  /** The session as the API shows it once it has ended. */
  ended: any;
}

/** A session being run through the portal by the ssh2 client (see `openSession`). */
export interface OpenSession {
  id: number;
  shell: import('../../cli/portal-client.js').PortalShell;
  /** What the client has received so far. */
  stdout(): Buffer;
  stderr(): Buffer;
  /** The output to the end, the exit status, and the session once it has ended. */
  done: Promise<SessionRun>;
}

/**
 * Creates a session through the API and attaches to it through the real SSH portal with the ssh2
 * client and its one-time token, as `essh ssh` does: the program starts when the client attaches (by
 * docker exec). Writes `input` (then EOF without a TTY) and collects the output while it comes; `done`
 * resolves with all of it, the exit status, and the session once it is `ended`.
 */
export async function openSession(
  stack: TestStack,
  t: { app: string; token: string },
  opts: { command?: string[]; tty?: boolean; input?: string | Buffer; size?: { rows: number; cols: number }; body?: object; endTimeoutMs?: number } = {},
): Promise<OpenSession> {
  const { openPortalShell } = await import('../../cli/portal-client.js');
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, { ...(opts.command ? { command: opts.command } : {}), ...opts.body });
  if (r.status !== 201) throw new Error(`creating a session: ${r.status} ${JSON.stringify(r.body)}`);
  const shell = await openPortalShell(r.body.connect, { pty: opts.tty ? (opts.size ?? { rows: 24, cols: 80 }) : null });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  shell.channel.on('data', (c: Buffer) => out.push(c));
  shell.channel.stderr.on('data', (c: Buffer) => err.push(c));
  if (opts.input !== undefined) shell.channel.write(opts.input);
  if (!opts.tty) shell.channel.end();
  const id = r.body.id as number;
  const done = (async (): Promise<SessionRun> => {
    const exitCode = await shell.exitCode;
    shell.close();
    const ended = await waitForState(stack, t.token, id, 'ended', opts.endTimeoutMs ?? 30_000);
    return { id, stdout: Buffer.concat(out), stderr: Buffer.concat(err), exitCode, ended };
  })();
  done.catch(() => undefined); // the caller awaits it, or the test has failed already
  return { id, shell, stdout: () => Buffer.concat(out), stderr: () => Buffer.concat(err), done };
}

/** `openSession` to its end: the session's output, its exit status, and the session once `ended`. */
export async function runInSession(
  stack: TestStack,
  t: { app: string; token: string },
  opts: Parameters<typeof openSession>[2] = {},
): Promise<SessionRun> {
  return (await openSession(stack, t, opts)).done;
}

/** The name of a session's container on the engine (CONTRACT §7: essh-<installation>-<operation id>). */
export function sessionContainer(stack: TestStack, operationId: number | string): string {
  return sessionContainerName(stack.runtime.installation.id, operationId);
}
