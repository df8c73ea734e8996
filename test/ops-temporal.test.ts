import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { InterceptingCall, Metadata, status, type Interceptor } from '@grpc/grpc-js';
import { Connection } from '@temporalio/client';
import Long from 'long';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { ensureSearchAttributes, SearchAttributesMissing } from '../lib/temporal.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../shapes/session-workflow.js';
import {
  createTenant, endAllSessions, runInSession, sleep, startTestStack, waitFor, waitForState, workflowBundle, type TestStack,
} from './support/harness.js';
import { startWorkerProcess } from './support/worker-process.js';
import { startDevServer, type DevServer } from '../server/temporal-dev.js';

/**
 * essh against an external Temporal that it did not start: a separate `temporal server start-dev`
 * (the project's CLI) without essh's search attributes, with its Web UI. Start-up registers the
 * attributes where it may, and stops with the exact `temporal operator search-attribute create`
 * commands where it may not (a server that refuses, here by an interceptor answering
 * PERMISSION_DENIED, or an attribute of the same name with another type). Each session's workflow
 * carries a summary, details and current details, and its activities and timers say what they are
 * for: checked in the real UI in Debian's chromium (driven by playwright-core, which downloads nothing).
 */

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const temporal = toolPath('temporal');
const run = promisify(execFile);

let server: DevServer | undefined;
let address: string;
let uiUrl: string;
let stack: TestStack | undefined;
let dir: string;
let browser: BrowserContext | undefined;


/** essh's attributes present in the namespace, with their types as the CLI names them. */
async function esshAttributes(namespace: string): Promise<Record<string, string>> {
  const { stdout } = await run(temporal, ['operator', 'search-attribute', 'list', '--address', address, '--namespace', namespace, '--output', 'json']);
  const listed = JSON.parse(stdout) as { customAttributes?: Record<string, string> };
  const types = Object.entries(listed.customAttributes ?? {}).filter(([name]) => name.startsWith('Essh'));
  return Object.fromEntries(types.map(([name, type]) => [name, type.replace(/^INDEXED_VALUE_TYPE_/, '')]));
}

async function registerNamespace(namespace: string) {
  const conn = await Connection.connect({ address });
  try {
    await conn.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86_400) } });
    await waitFor(`namespace ${namespace}`, async () => (await conn.operatorService.listSearchAttributes({ namespace }).then(() => true, () => false)), 20_000, 250);
  } finally {
    await conn.close();
  }
}

/** A gRPC interceptor that answers AddSearchAttributes with PERMISSION_DENIED, as a server with authorization does. */
const denyAddSearchAttributes: Interceptor = (options, nextCall) => {
  if (!options.method_definition.path.endsWith('/AddSearchAttributes')) return new InterceptingCall(nextCall(options));
  // The call is never started: the answer comes from here.
  return new InterceptingCall(nextCall(options), {
    start(_metadata, listener) {
      setImmediate(() => listener.onReceiveStatus({
        code: status.PERMISSION_DENIED, details: 'Request unauthorized.', metadata: new Metadata(),
      }));
    },
    sendMessage() {},
    halfClose() {},
    cancel() {},
  });
};

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`test/ops-temporal.test.ts needs ${CHROMIUM}: \`bash scripts/setup.sh --for-tests\` installs Debian's chromium (npm test runs it)`);
  }
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-temporal-ui-'));
  // An external server as an operator runs one: no --search-attribute flags. (Started with its process
  // watched: one that ends says so at once, with its exit status and what it printed.)
  server = await startDevServer({ binary: temporal, dataDir: dir, namespace: 'default', inMemory: true, withoutEsshSettings: true });
  address = server.address;
  uiUrl = server.uiUrl;
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  if (stack) {
    await endAllSessions(stack).catch(() => undefined);
    await stack.stop();
  }
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('essh against an external Temporal', () => {
  it('registers its search attributes at start-up on a namespace that lacks them', async () => {
    expect(await esshAttributes('default')).toEqual({});
    stack = await startTestStack({
      namespace: 'default',
      env: { TEMPORAL_ADDRESS: address },
      parts: { api: true, worker: true, hostStacks: ['local'], portal: true, workflowBundle: workflowBundle(), searchAttributes: true },
    });
    expect(await esshAttributes('default')).toEqual(Object.fromEntries(SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, k.type])));
    // They work: a session is found by them.
    const tenant = await createTenant(stack, { plan: 'scale' });
    const r = await runInSession(stack, tenant, { command: ['sh', '-c', 'exit 0'] });
    await waitFor('the session in visibility', async () => {
      const { stdout } = await run(temporal, ['workflow', 'list', '--address', address, '--query',
        `EsshApp="${tenant.app}" AND EsshOperationId=${r.id} AND EsshState="ended" AND EsshEndReason="exit"`]);
      return stdout.includes(`ssh-session-${r.id}`);
    }, 20_000, 500);
  });

  it('stops with the exact temporal commands where the server refuses to add them, and those commands work', async () => {
    await registerNamespace('essh-locked');
    const locked = await Connection.connect({ address, interceptors: [denyAddSearchAttributes] });
    let message = '';
    try {
      const err = await ensureSearchAttributes(locked, { namespace: 'essh-locked', address }).then(() => null, (e: Error) => e);
      expect(err).toBeInstanceOf(SearchAttributesMissing);
      message = err!.message;
    } finally {
      await locked.close();
    }
    expect(message).toContain('PERMISSION_DENIED: Request unauthorized.');
    const commands = message.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('temporal '));
    expect(commands).toEqual(SEARCH_ATTRIBUTE_KEYS.map((k) =>
      `temporal operator search-attribute create --address ${address} --namespace essh-locked --name ${k.name} --type ${k.type === 'INT' ? 'Int' : 'Keyword'}`));
    expect(commands[0]).toBe(`temporal operator search-attribute create --address ${address} --namespace essh-locked --name EsshApp --type Keyword`);
    // An operator runs them as printed; essh then finds everything in place.
    for (const command of commands) await run(temporal, command.split(' ').slice(1));
    expect(await esshAttributes('essh-locked')).toEqual(Object.fromEntries(SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, k.type])));
    const plain = await Connection.connect({ address });
    try {
      expect(await ensureSearchAttributes(plain, { namespace: 'essh-locked', address })).toEqual({ added: [] });
    } finally {
      await plain.close();
    }
  });

  it('will not start a worker on a namespace whose attribute has another type, and says which', async () => {
    await registerNamespace('essh-clash');
    await run(temporal, ['operator', 'search-attribute', 'create', '--address', address, '--namespace', 'essh-clash', '--name', 'EsshApp', '--type', 'Text']);
    const started = await startWorkerProcess(stack!, { TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: 'essh-clash', ESSH_WORKER_ROLES: 'main' })
      .then(async (w) => { await w.stop(); return null; }, (e: Error) => e.message);
    expect(started).toMatch(/exited \(1\)/);
    expect(started).toContain('essh worker: could not start: namespace essh-clash has EsshApp as Text (essh needs Keyword)');
    // It changed nothing.
    expect((await esshAttributes('essh-clash')).EsshApp).toBe('TEXT');
  });
});

describe('each session in the Temporal UI', () => {
  let tenant: Awaited<ReturnType<typeof createTenant>>;
  let ended: number;
  let waiting: number;

  beforeAll(async () => {
    tenant = await createTenant(stack!, { plan: 'scale' });
    ended = (await runInSession(stack!, tenant, { command: ['sh', '-c', 'echo ui-check; exit 3'] })).id;
    const created = await stack!.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    expect(created.status).toBe(201);
    waiting = created.body.id;
    await waitForState(stack!, tenant.token, waiting, 'waiting_for_client', 60_000);
    browser = await chromium.launchPersistentContext(path.join(dir, 'profile'), { executablePath: CHROMIUM, args: ARGS, headless: true });
  }, 180_000);

  /**
   * The workflow's page on `tab`. Chromium drops requests in flight when the machine's network
   * interfaces change (ERR_NETWORK_CHANGED), as Docker's do whenever a container starts or stops on this
   * shared engine: the UI then shows its error page, and the page is loaded again.
   */
  async function openWorkflow(id: number, tab: 'user-metadata' | 'history', until: (text: string) => boolean): Promise<{ page: Page; text: string }> {
    const { runId } = await stack!.runtime.client.workflow.getHandle(`ssh-session-${id}`).describe();
    const page = await browser!.newPage();
    await page.setViewportSize({ width: 1400, height: 1000 });
    const url = `${uiUrl}/namespaces/default/workflows/ssh-session-${id}/${runId}/${tab}`;
    let text = '';
    const deadline = Date.now() + 60_000;
    // A request dropped that way may also leave the page blank (an asset that never loaded): that is
    // loaded again too, after a while.
    const load = async () => {
      loadedAt = Date.now();
      await page.goto(url).catch(() => undefined);
    };
    let loadedAt = 0;
    await load();
    while (!until(text)) {
      if (Date.now() > deadline) throw new Error(`the Temporal UI's ${tab} page of session ${id} did not show what was expected within 60 s; it showed:\n${text}`);
      await sleep(500);
      // Temporal markdown (summary, details) is rendered in sandboxed frames of their own.
      text = (await Promise.all(page.frames().map((f) => f.evaluate(() => document.body?.innerText ?? '').catch(() => '')))).join('\n');
      if (/Internal Error|Uh oh/.test(text) || (!text.trim() && Date.now() - loadedAt > 10_000)) {
        await load();
        text = '';
      }
    }
    return { page, text };
  }

  it('shows the summary, the details and the current details of a session that ended, without e-mail', async () => {
    const { page, text } = await openWorkflow(ended, 'user-metadata', (t) => /End reason exit · Exit code 3/.test(t) && t.includes('Expires'));
    // Summary.
    expect(text).toContain(`essh session ${ended} · app ${tenant.app} · account ${tenant.account} · stack local`);
    // Details.
    expect(text).toContain(`Session ${ended} (operation ${ended})`);
    expect(text).toMatch(new RegExp(`App ${tenant.app} \\(id \\d+\\) · Account ${tenant.account} \\(id \\d+\\) · Stack local`));
    expect(text).toContain(`User id ${tenant.user.id}`);
    // Current details, from the query the worker answers.
    expect(text).toMatch(/State ended · Container [0-9a-f]{12} · Clients attached \d/);
    expect(text).not.toContain(tenant.user.email);
    expect(text).not.toContain(tenant.user.name);
    const shot = path.join(dir, `session-${ended}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    expect((await stat(shot)).size).toBeGreaterThan(10_000);
    if (process.env.ESSH_KEEP_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.ESSH_KEEP_SCREENSHOTS, 'session-ended.png'), fullPage: true });
    await page.close();
  });

  it('shows a live session\'s state as it is now', async () => {
    const { page, text } = await openWorkflow(waiting, 'user-metadata', (t) => /State waiting_for_client/.test(t) && t.includes('Expires'));
    expect(text).toContain(`essh session ${waiting} · app ${tenant.app}`);
    expect(text).not.toMatch(/End reason/);
    await page.screenshot({ path: path.join(dir, `session-${waiting}.png`), fullPage: true });
    if (process.env.ESSH_KEEP_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.ESSH_KEEP_SCREENSHOTS, 'session-waiting.png'), fullPage: true });
    await page.close();
  });

  it('names what each activity and timer is for', async () => {
    const summariesOf = async (id: number) => {
      const { stdout } = await run(temporal, ['workflow', 'show', '--address', address, '--workflow-id', `ssh-session-${id}`, '--output', 'json']);
      const events = (JSON.parse(stdout) as { events: { eventType: string; userMetadata?: { summary?: { data?: string } } }[] }).events;
      return events
        .filter((e) => /ACTIVITY_TASK_SCHEDULED|TIMER_STARTED/.test(e.eventType))
        .map((e) => ({ type: e.eventType, summary: e.userMetadata?.summary?.data ? JSON.parse(Buffer.from(e.userMetadata.summary.data, 'base64').toString()) as string : undefined }));
    };
    const endedOnes = await summariesOf(ended);
    const waitingOnes = await summariesOf(waiting);
    expect(endedOnes.length).toBeGreaterThan(3);
    expect([...endedOnes, ...waitingOnes].filter((x) => !x.summary)).toEqual([]);
    const texts = endedOnes.map((x) => x.summary);
    // Placed on the stack's one host (docs/fleet.md), which the summary names.
    expect(texts).toContain(`Provision the session's container on host ${stack!.config.hostId} of stack local`);
    expect(texts).toContain('Record the session as waiting_for_client');
    expect(texts).toContain('Remove the container and close the output journal (exit)');
    // Each timer of the wait loop says which deadline it is.
    for (const t of [...endedOnes, ...waitingOnes].filter((x) => x.type.includes('TIMER'))) {
      expect(t.summary).toMatch(/^(Connect timeout: no client within \d+ s of the container being ready|Heartbeat timeout: no heartbeat from the client for \d+ s|Maximum session duration: the session expires at \S+)$/);
    }
    expect(waitingOnes.map((x) => x.summary)).toContainEqual(expect.stringMatching(/^Connect timeout: no client within \d+ s of the container being ready$/));
    // The UI's event history shows them.
    const { page } = await openWorkflow(ended, 'history', (t) => t.includes('Provision the session') && t.includes('Record the session as ended'));
    await page.close();
  });
});
