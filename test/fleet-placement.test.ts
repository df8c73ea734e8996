// Many hosts per stack (issue 19 part 2, docs/fleet.md): one stack served by three host processes on
// this machine, each with its own ESSH_HOST_ID, data dir, portal and task queue, all on the run's
// Temporal and the one Docker engine. This process runs the API and the session workflows, no host.
// - sessions spread over the hosts with room, and past their ESSH_HOST_MAX_SESSIONS the create is
//   refused with a sentence naming each host and why;
// - each session's container is made by the host it was placed on (its container label and journal
//   row), the connect block names that host's portal, and a client attaches through it to a prompt;
// - `ssh <app>@host` on a full host names a host of the stack that has room;
// - a cordoned host takes no new session (its own re-registration does not undo the cordon), and
//   uncordoned it takes them again; GET /hosts reports all of it, to operators only;
// - each host keeps its own warm pool on the shared engine, and GET /hosts reports it;
// - one of the three upgraded (a new process on its id, data dir and ports, SIGTERM to the old) while
//   clients type on all three: no session ends, a new one attaches through the new process, the old one
//   exits once its client has left;
// - one of the three killed for good: once silent for ESSH_HOST_STALE_S it takes no new session, its
//   session ends container_lost naming it, the others' go on; back again, it removes what it left.
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startClientFleet } from '../bench/live-fleet.js';
import { REUSE_PORT } from '../lib/handover.js';
import { LABELS } from '../lib/docker.js';
import { freeLoopbackPort } from '../lib/free-port.js';
import { openPortalShell } from '../cli/portal-client.js';
import { apiAndWorkflows, containerExists, createTenant, docker, endAllSessions, useTestStack, waitFor, waitForState } from './support/harness.js';
import { generateKey, keyOnly, registerKey, runToEnd, sshArgs } from './support/portal-terminal.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

const MAX = 2;
const HOSTS = ['fleet-a', 'fleet-b', 'fleet-c'];
// Shorter than the production 45 s and 10 s, so that the host killed for good is not waited out; long
// enough that a host merely slowed by the loaded machine (it reports every 2 s) is not taken for lost.
const STALE_S = 20;
const SWEEP_S = 2;
/** The demo image's shell prompt (busybox's line editor then asks the terminal where its cursor is). */
const PROMPT = /:\/app[$#] /;

const stack = useTestStack({
  parts: apiAndWorkflows(),
  env: { ESSH_HOST_STALE_S: String(STALE_S), ESSH_HOST_LOSS_SWEEP_S: String(SWEEP_S) },
});
let tenant: Awaited<ReturnType<typeof createTenant>>;
let keyDir: string;
const processes: WorkerProcess[] = [];
const hostDirs = new Map<string, string>();
const hostEnvs = new Map<string, Record<string, string>>();

interface HostView {
  id: string; stacks: string[]; live_sessions: number; max_sessions: number; free_disk_bytes: number | null;
  free_memory_bytes: number | null; ssh: { host: string; port: number } | null; seen_at: string; stale: boolean; cordoned: boolean;
  pool: { ready: number; target: number } | null;
}

async function hosts(): Promise<Map<string, HostView>> {
  const r = await stack.api.get('/hosts', stack.adminToken);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return new Map((r.body.items as HostView[]).filter((h) => HOSTS.includes(h.id)).map((h) => [h.id, h]));
}

/** The host the create transaction wrote on the session's record. */
async function placedOn(id: number): Promise<string | null> {
  const row = await stack.runtime.db.selectFrom('operations').select('host_id').where('id', '=', id).executeTakeFirstOrThrow();
  return row.host_id;
}

async function create() {
  return stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
}

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'enterprise', max: 20 });
  keyDir = await mkdtemp(path.join(os.tmpdir(), 'essh-fleet-keys-'));
  const secretsKey = (await readFile(path.join(stack.dataDir, 'secrets.key'), 'utf8')).trim();
  for (const id of HOSTS) hostDirs.set(id, await mkdtemp(path.join(os.tmpdir(), `essh-${id}-`)));
  // One at a time: three tsx start-ups at once on two cores take longer than one after the other.
  for (const id of HOSTS) {
    hostEnvs.set(id, {
      ESSH_WORKER_ROLES: 'host', ESSH_HOST_STACKS: 'local', ESSH_HOST_ID: id, ESSH_DATA_DIR: hostDirs.get(id)!,
      ESSH_SECRETS_KEY: secretsKey, ESSH_HOST_MAX_SESSIONS: String(MAX),
      // Fixed, so that an upgrade's new process takes over the same ones.
      ESSH_SSH_PORT: String(await freeLoopbackPort()), ESSH_METRICS_PORT: String(await freeLoopbackPort()),
    });
    processes.push(await startWorkerProcess(stack, hostEnvs.get(id)!));
  }
  await waitFor('the three hosts with their portals in GET /hosts', async () => {
    const h = await hosts();
    return h.size === 3 && [...h.values()].every((x) => x.ssh !== null && !x.stale);
  }, 30_000, 250);
}, 300_000);
afterAll(async () => {
  if (stack) await endAllSessions(stack).catch(() => undefined);
  for (const p of processes) await p.stop();
  for (const d of [...hostDirs.values(), keyDir]) if (d) await rm(d, { recursive: true, force: true });
}, 120_000);

describe('a stack of three hosts, placed by capacity', () => {
  // Each test starts with every host empty.
  afterEach(() => endAllSessions(stack), 120_000);

  it('spreads sessions over the hosts with room, runs each where it was placed, and refuses the one past every host\'s limit', async () => {
    const before = await hosts();
    expect([...before.values()].map((h) => ({ id: h.id, stacks: h.stacks, max: h.max_sessions, cordoned: h.cordoned })))
      .toEqual(HOSTS.map((id) => ({ id, stacks: ['local'], max: MAX, cordoned: false })));
    for (const h of before.values()) {
      expect(h.free_disk_bytes).toBeGreaterThan(0);
      expect(h.free_memory_bytes).toBeGreaterThan(0);
    }

    const created: { id: number; host: string; connect: any }[] = [];
    for (let i = 0; i < HOSTS.length * MAX; i++) {
      const r = await create();
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const host = (await placedOn(r.body.id))!;
      // The connect block names the portal of the host it was placed on.
      expect(r.body.connect.port).toBe(before.get(host)!.ssh!.port);
      created.push({ id: r.body.id, host, connect: r.body.connect });
    }
    // The one with the most room each time: two on each, never three on one.
    expect(HOSTS.map((h) => created.filter((c) => c.host === h).length)).toEqual(HOSTS.map(() => MAX));

    const refused = await create();
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.message).toBe(
      `No host of stack local can take a new session now: ${HOSTS.map((h) => `host ${h} is full (${MAX} of ${MAX} live sessions)`).join('; ')}. ` +
      'Try again when a session ends, or ask an operator to add a host to the stack or uncordon one.',
    );

    const now = await hosts();
    for (const h of HOSTS) expect(now.get(h)!.live_sessions).toBe(MAX);

    // Each container was made by the host worker of the host it was placed on.
    for (const c of created) {
      const ready = await waitForState(stack, tenant.token, c.id, 'waiting_for_client', 90_000);
      const labels = (await docker.getContainer(ready.container_id).inspect()).Config.Labels;
      expect(labels[LABELS.host], `session ${c.id}`).toBe(c.host);
      const journal = await stack.runtime.db.selectFrom('session_journals').select('host_id').where('operation_id', '=', c.id).executeTakeFirstOrThrow();
      expect(journal.host_id).toBe(c.host);
    }
    // A client attaches through the named portal (one session per host) and gets a prompt; the
    // portal that served it is that host's: its note of the client is in that host's data dir.
    for (const h of HOSTS) {
      const c = created.find((x) => x.host === h)!;
      const shell = await openPortalShell(c.connect, { pty: { rows: 24, cols: 80 } });
      let out = '';
      shell.channel.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(`a prompt through ${h}'s portal`, async () => PROMPT.test(out), 30_000, 100)
        .catch((err: Error) => { throw new Error(`${err.message}; the client got ${JSON.stringify(out)}`); });
      shell.channel.write(`echo "on-$((40+2))"\n`);
      await waitFor(`the command's output through ${h}'s portal`, async () => /^on-42\s*$/m.test(out), 15_000, 100);
      expect((await readFile(path.join(hostDirs.get(h)!, 'attached', String(c.id)), 'utf8')).length).toBeGreaterThan(0);
      shell.channel.write('exit\n');
      expect(await shell.exitCode).toBe(0);
      shell.close();
      await waitForState(stack, tenant.token, c.id, 'ended', 30_000);
    }
  });

  it('creates from many accounts at once take every slot exactly once', async () => {
    // Other accounts: the account lock does not order them, only the host's (PostgreSQL) or the database's (SQLite).
    const tenants = await Promise.all(Array.from({ length: 2 * HOSTS.length * MAX }, () => createTenant(stack, { plan: 'enterprise' })));
    const answers = await Promise.all(tenants.map((t) => stack.api.post(`/apps/${t.app}/sessions`, t.token, { command: ['sleep', '600'] })));
    expect(answers.map((r) => r.status).sort()).toEqual([...Array(HOSTS.length * MAX).fill(201), ...Array(HOSTS.length * MAX).fill(503)]);
    const placed = await Promise.all(answers.filter((r) => r.status === 201).map((r) => placedOn(r.body.id)));
    expect(HOSTS.map((h) => placed.filter((p) => p === h).length)).toEqual(HOSTS.map(() => MAX));
  });

  it('`ssh <app>@host` runs on that host when it has room, and on a full one names a host that has', async () => {
    const key = await generateKey(keyDir, 'fleet');
    await registerKey(stack, tenant.token, tenant.user.id, key.keyFile);
    const h = await hosts();
    // Every slot but one taken: one host has room, the others are full.
    for (let i = 0; i < HOSTS.length * MAX - 1; i++) {
      const r = await create();
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    const full = await hosts();
    const withRoom = HOSTS.filter((x) => full.get(x)!.live_sessions < MAX);
    const fullOnes = HOSTS.filter((x) => full.get(x)!.live_sessions >= MAX);
    expect(withRoom.length).toBe(1);
    const [roomy] = withRoom as [string];
    const fullHost = fullOnes[0]!;

    const refused = await runToEnd('ssh', [...sshArgs(h.get(fullHost)!.ssh!.port, keyOnly(key.keyFile)), `${tenant.app}@127.0.0.1`, 'echo never']);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(
      `essh: This portal's host ${fullHost} is full (${MAX} of ${MAX} live sessions), so it takes no new session; ` +
      `host ${roomy} of stack local has room: connect to 127.0.0.1:${h.get(roomy)!.ssh!.port} instead.`,
    );
    const ran = await runToEnd('ssh', [...sshArgs(h.get(roomy)!.ssh!.port, keyOnly(key.keyFile)), `${tenant.app}@127.0.0.1`, 'echo "here-$((6*7))"']);
    expect(ran.stderr).toBe('');
    expect(ran.stdout.toString()).toBe('here-42\n');
    expect(ran.code).toBe(0);
    const list = await stack.api.get(`/sessions?app=${tenant.app}`, tenant.token);
    const viaSsh = list.body.items.find((x: any) => x.command?.[2] === 'echo "here-$((6*7))"');
    expect(await placedOn(viaSsh.id)).toBe(roomy);
  });

  it('a cordoned host takes no new session, keeps its cordon through its own reports, and takes them again once uncordoned', async () => {
    const member = await stack.api.get('/hosts', tenant.token);
    expect(member.status).toBe(403);
    expect((await stack.api.post('/hosts/fleet-b/cordon', tenant.token, {})).status).toBe(403);
    expect((await stack.api.post('/hosts/no-such-host/cordon', stack.adminToken, {})).status).toBe(404);

    const cordoned = await stack.api.post('/hosts/fleet-b/cordon', stack.adminToken, {});
    expect(cordoned.status, JSON.stringify(cordoned.body)).toBe(200);
    expect(cordoned.body).toMatchObject({ id: 'fleet-b', cordoned: true, live_sessions: 0 });
    // Its registration writes its row every ESSH_RECONCILE_INTERVAL_S: the cordon is not its to undo.
    const seen = cordoned.body.seen_at as string;
    const later = await waitFor('a report of fleet-b after the cordon', async () => {
      const b = (await hosts()).get('fleet-b')!;
      return b.seen_at > seen ? b : undefined;
    }, 30_000, 250);
    expect(later.cordoned).toBe(true);

    const ids: number[] = [];
    for (let i = 0; i < 2 * MAX; i++) {
      const r = await create();
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
      expect(await placedOn(r.body.id)).not.toBe('fleet-b');
    }
    const refused = await create();
    expect(refused.status).toBe(503);
    expect(refused.body.message).toContain(`host fleet-a is full (${MAX} of ${MAX} live sessions); host fleet-b is cordoned; host fleet-c is full`);

    const audit = await stack.api.get('/audit_events?action=host.cordoned', stack.adminToken);
    expect(audit.body.items[0]).toMatchObject({ target: { type: 'host', id: 'fleet-b' } });

    const uncordoned = await stack.api.post('/hosts/fleet-b/uncordon', stack.adminToken, {});
    expect(uncordoned.body).toMatchObject({ id: 'fleet-b', cordoned: false });
    const r = await create();
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(await placedOn(r.body.id)).toBe('fleet-b');
    const ready = await waitForState(stack, tenant.token, r.body.id, 'waiting_for_client', 90_000);
    expect((await docker.getContainer(ready.container_id).inspect()).Config.Labels[LABELS.host]).toBe('fleet-b');
    expect((await hosts()).get('fleet-b')!.live_sessions).toBe(1);
  });
  it('each host keeps its own warm pool of the app on the shared engine, leaves the others\' alone, and reports it', async () => {
    const poolOf = async () => (await docker.listContainers({
      filters: { label: [`${LABELS.pool}=true`, `${LABELS.app}=${tenant.app}`], status: ['running'] },
    })).filter((c) => c.Names.some((n) => n.includes('-pool-')));
    expect((await stack.api.request('PATCH', `/apps/${tenant.app}`, stack.adminToken, { warm_pool: 1 })).status).toBe(200);
    try {
      await waitFor('every host reporting a warm pool of 1, filled', async () => {
        const h = await hosts();
        return HOSTS.every((x) => h.get(x)!.pool?.ready === 1 && h.get(x)!.pool?.target === 1);
      }, 120_000, 250);
      const first = await poolOf();
      expect(first.map((c) => c.Labels[LABELS.host]).sort()).toEqual(HOSTS);
      // Two more reports of every host, each after a keeper pass: a host that took the others'
      // containers for its own would have removed two as surplus and made them again.
      for (let pass = 0; pass < 2; pass++) {
        const seen = new Map([...(await hosts())].map(([id, x]) => [id, x.seen_at]));
        await waitFor('a report of every host after the last', async () => {
          const h = await hosts();
          return HOSTS.every((x) => h.get(x)!.seen_at > seen.get(x)!);
        }, 30_000, 250);
      }
      expect((await poolOf()).map((c) => c.Id).sort()).toEqual(first.map((c) => c.Id).sort());
      expect([...(await hosts()).values()].map((x) => x.pool)).toEqual(HOSTS.map(() => ({ ready: 1, target: 1 })));
    } finally {
      await stack.api.request('PATCH', `/apps/${tenant.app}`, stack.adminToken, { warm_pool: 0 });
    }
    await waitFor('the pools removed', async () => (await poolOf()).length === 0, 60_000, 250);
    await waitFor('every host reporting an empty pool', async () => {
      const h = await hosts();
      return HOSTS.every((x) => h.get(x)!.pool?.ready === 0 && h.get(x)!.pool?.target === 0);
    }, 30_000, 250);
  });
  it('one host upgraded while clients type on all three: no session ends, a new one attaches through the new process, the old one exits after its client', async () => {
    const fleet = await startClientFleet();
    try {
      const ids: number[] = [];
      for (let i = 0; i < HOSTS.length; i++) {
        const r = await create();
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        ids.push(r.body.id);
        await fleet.attach(r.body.id, r.body.connect);
      }
      const onA = (await Promise.all(ids.map(async (id) => [id, await placedOn(id)] as const))).find(([, h]) => h === 'fleet-a')![0];
      await fleet.typeStart(100);
      await sleep(1000);

      const i = HOSTS.indexOf('fleet-a');
      const old = processes[i]!;
      const next = await startWorkerProcess(stack, hostEnvs.get('fleet-a')!, REUSE_PORT ? {} : { readyWhen: 'waiting for its SIGTERM' });
      processes[i] = next;
      old.signal('SIGTERM');
      await old.printed('essh worker handing over', 10_000);
      await next.printed('essh worker ready', 60_000);

      // A new session on fleet-a (the others cordoned for it) attaches through the new process.
      for (const h of ['fleet-b', 'fleet-c']) expect((await stack.api.post(`/hosts/${h}/cordon`, stack.adminToken, {})).status).toBe(200);
      const r = await create();
      for (const h of ['fleet-b', 'fleet-c']) await stack.api.post(`/hosts/${h}/uncordon`, stack.adminToken, {});
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(await placedOn(r.body.id)).toBe('fleet-a');
      await fleet.attach(r.body.id, r.body.connect);
      // The boot id of the portal process that noted each client (lib/handover.ts marks).
      const bootOf = (id: number) => /^portal-([0-9a-f]+)-/.exec(readFileSync(path.join(hostDirs.get('fleet-a')!, 'attached', String(id)), 'utf8'))?.[1];
      expect(bootOf(r.body.id)).toBeDefined();
      expect(bootOf(r.body.id)).not.toBe(bootOf(onA));

      // Past a few heartbeats and reports: every session goes on, fleet-a stays a live host.
      await sleep(10_000);
      const context = () => `old process:\n${old.output().slice(-2000)}\nnew process:\n${next.output().slice(-2000)}`;
      const rows = await stack.runtime.db.selectFrom('operations').select(['id', 'state', 'end_reason']).where('id', 'in', [...ids, r.body.id]).execute();
      expect(rows.filter((row) => row.state !== 'active'), context()).toEqual([]);
      expect(fleet.unexpectedCloses, context()).toEqual([]);
      expect((await hosts()).get('fleet-a')).toMatchObject({ stale: false, live_sessions: 2 });

      // The old process stays while its client is attached, and exits once it has left.
      let oldExit: number | null | undefined;
      void old.exited.then((code) => (oldExit = code));
      await fleet.typeStop();
      expect(oldExit, context()).toBeUndefined();
      await fleet.close([onA]);
      await waitFor('the old process of fleet-a to exit after its last client left', async () => oldExit !== undefined, 60_000);
      expect(oldExit, context()).toBe(0);
      expect(await fleet.open()).toEqual(expect.arrayContaining([r.body.id]));
    } finally {
      await fleet.close().catch(() => undefined);
      await fleet.stop();
    }
  });

  // Last: it kills fleet-c.
  it('one host killed for good: once stale it takes no new session, its session ends container_lost, the others\' go on; back, it removes what it left', async () => {
    const ids: number[] = [];
    for (let i = 0; i < HOSTS.length; i++) {
      const r = await create();
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
    }
    // Spread by room: one on each host.
    const on = new Map<string, number>();
    for (const id of ids) on.set((await placedOn(id))!, id);
    expect([...on.keys()].sort()).toEqual(HOSTS);
    const ready = new Map<string, any>();
    for (const [host, id] of on) ready.set(host, await waitForState(stack, tenant.token, id, 'waiting_for_client', 90_000));

    const dead = processes[HOSTS.indexOf('fleet-c')]!;
    await dead.kill('SIGKILL');
    const lastSeenAt = (await hosts()).get('fleet-c')!.seen_at;
    await waitFor('fleet-c shown stale', async () => (await hosts()).get('fleet-c')!.stale, (STALE_S + 30) * 1000, 250);
    // The two live hosts have one slot each left: both new sessions go there, none to the dead host.
    for (let i = 0; i < 2; i++) {
      const r = await create();
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(['fleet-a', 'fleet-b']).toContain(await placedOn(r.body.id));
      ids.push(r.body.id);
    }
    // The live hosts are full now; the dead one, though its count shows room, is not offered.
    const refused = await create();
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.message).toContain(`host fleet-a is full (${MAX} of ${MAX} live sessions); host fleet-b is full`);
    expect(refused.body.message).not.toContain('fleet-c');
    const lost = await waitForState(stack, tenant.token, on.get('fleet-c')!, 'ended', (STALE_S + SWEEP_S + 60) * 1000);
    expect(lost).toMatchObject({
      end_reason: 'container_lost',
      end_message: `host fleet-c stopped reporting at ${lastSeenAt}; its container could not be removed and will be when the host returns`,
    });
    for (const host of ['fleet-a', 'fleet-b']) {
      const s = await stack.api.get(`/sessions/${on.get(host)}`, tenant.token);
      expect(s.body.state, `the session on ${host}`).toBe('waiting_for_client');
    }
    const left = ready.get('fleet-c').container_id as string;
    expect(await containerExists(left)).toBe(true);

    // Back with the same id and data dir: its reconciler removes the container it left.
    processes[HOSTS.indexOf('fleet-c')] = await startWorkerProcess(stack, hostEnvs.get('fleet-c')!);
    await waitFor('the container fleet-c left removed', async () => !(await containerExists(left)), 60_000, 500);
    expect((await hosts()).get('fleet-c')!.stale).toBe(false);
  });
});
