import { imageRepository } from '../domain/grants.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, toolPath } from '../lib/config.js';
import type { Db } from '../lib/db.js';
import { createLogger } from '../lib/log.js';
import { routeTemporalLogs } from '../lib/temporal.js';
import { principalForUser, type Principal } from '../services/auth.js';
import { SessionsService } from '../services/sessions.js';
import { startRuntime, type Runtime } from '../server/runtime.js';
import { SA, SEARCH_ATTRIBUTE_KEYS, describeQuery, heartbeatSignal, type SessionResult } from '../shapes/session-workflow.js';
import { removeInstallationFromEngine } from '../host/containers.js';
import { startTemporalServer } from './support/temporal-start.js';
import { containerExists, docker, DEMO_IMAGE, rememberInstallation, startOperationIdsAt, uniqueIdBase, waitFor, workflowBundle } from './support/harness.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

let env: TestWorkflowEnvironment;
let runtime: Runtime;
let db: Db;
let dataDir: string;

beforeAll(async () => {
  // Before the environment starts the SDK's runtime, so that its log lines follow our level.
  routeTemporalLogs(createLogger('warn'));
  env = await startTemporalServer(() => TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: toolPath('temporal-test-server') } },
  }), 'the time-skipping test server');
  // The time-skipping server knows no custom search attribute until told (it implements
  // AddSearchAttributes, though not ListSearchAttributes); without them, starting the session fails.
  const types = temporal.api.enums.v1.IndexedValueType;
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(
      SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, k.type === 'INT' ? types.INDEXED_VALUE_TYPE_INT : types.INDEXED_VALUE_TYPE_KEYWORD]),
    ),
  });
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'essh-7d-'));
  const config = loadConfig({
    ...process.env,
    ESSH_DATA_DIR: dataDir,
    TEMPORAL_ADDRESS: env.connection.options.address,
    TEMPORAL_NAMESPACE: env.namespace ?? 'default',
    ESSH_HOST_ID: 'time-skipping',
    ESSH_METRICS_PORT: '0',
    ESSH_STOP_GRACE_S: '1',
    ESSH_RECONCILE_INTERVAL_S: '2',
    ESSH_LOG_LEVEL: 'warn',
  });
  // The real workers, activities, host agent and reconcilers, on the time-skipping server.
  runtime = await startRuntime(config, { worker: true, hostStacks: ['local'], workflowBundle: workflowBundle() }, createLogger('warn'));
  db = runtime.db;
  rememberInstallation(runtime.instanceId);
  await startOperationIdsAt(db, 'sqlite', uniqueIdBase());
});
afterAll(async () => {
  await runtime?.stop();
  if (runtime) await removeInstallationFromEngine(docker, runtime.instanceId);
  await env?.teardown();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

it('a session on a default stack expires at 7 days, active or not, and not before', async () => {
  // The tenant, through the same services the API uses; the stack keeps the default maximum.
  const operator: Principal = { id: 0, name: 'Operator', email: 'ops@example.com', role: 'operator', accountIds: [] };
  const admin = runtime.admin;
  const stack = await admin.stacks.create(operator, { name: 'local' });
  expect(stack.max_session_duration_s).toBe(604_800);
  await admin.accounts.create(operator, { handle: 'acme', plan: 'growth', image_prefixes: [imageRepository(DEMO_IMAGE)] });
  await admin.apps.create(operator, { handle: 'web', account: 'acme', stack: 'local', image: DEMO_IMAGE });
  const member = await admin.users.create(operator, { name: 'Ada', email: 'ada@example.com', role: 'member', accounts: ['acme'] });
  const principal = (await principalForUser(db, member.id))!;

  const sessions = new SessionsService({
    db, engine: 'sqlite', client: env.client, instanceId: runtime.instanceId, secrets: runtime.secrets,
    // Timeouts far beyond 7 days, so that only the maximum duration can end it.
    timeouts: { heartbeatTimeoutS: 30 * 86_400, connectTimeoutS: 30 * 86_400, stopGraceS: 1, pidsLimit: 64, tokenTtlS: 300 },
    ssh: { publicHost: '127.0.0.1', port: 2222 },
  });
  const session = await sessions.create(principal, 'web', {});
  const createdAt = Date.parse(session.created_at);
  expect(Date.parse(session.expires_at!) - createdAt).toBe(7 * DAY);

  const handle = env.client.workflow.getHandle(session.workflow_id);
  const ready = await waitFor('the container to be ready', async () => {
    const d = await handle.query(describeQuery);
    return d.state === 'waiting_for_client' ? d : undefined;
  }, 60_000);
  expect((await docker.getContainer(ready.container_id!).inspect()).State.Running).toBe(true);
  await handle.signal(heartbeatSignal, { connection_id: 'ssh-1' });
  await waitFor('the session to be active', async () => (await handle.query(describeQuery)).state === 'active');

  // Six days and 23 hours after creation: still running, still the same container.
  await env.sleep(7 * DAY - HOUR - (Date.now() - createdAt));
  const late = await handle.query(describeQuery);
  expect(late).toMatchObject({ state: 'active', end_reason: null, container_id: ready.container_id });
  expect((await handle.describe()).status.name).toBe('RUNNING');
  expect(await containerExists(ready.container_id!)).toBe(true);

  // Letting time run on to the end: the session expires, and its container goes.
  const result = (await handle.result()) as SessionResult;
  expect(result.end_reason).toBe('expired');
  const row = await db.selectFrom('operations').selectAll().where('id', '=', session.id).executeTakeFirstOrThrow();
  expect(row).toMatchObject({ state: 'ended', end_reason: 'expired', status: 'succeeded' });
  const endedAfter = Date.parse(row.ended_at!) - createdAt;
  expect(endedAfter).toBeGreaterThanOrEqual(7 * DAY);
  expect(endedAfter).toBeLessThan(7 * DAY + HOUR);
  expect(await containerExists(ready.container_id!)).toBe(false);
  // The workflow's search-attribute upserts were accepted and followed the state to its end.
  const closed = await handle.describe();
  expect(closed.typedSearchAttributes.get(SA.state)).toBe('ended');
  expect(closed.typedSearchAttributes.get(SA.endReason)).toBe('expired');
  expect(closed.typedSearchAttributes.get(SA.operationId)).toBe(session.id);
}, 120_000);
