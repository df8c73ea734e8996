// An upgrade of a host process under live sessions (issue 19 part 3, lib/handover.ts): the new process
// starts on the same ESSH_HOST_ID, data dir and ports, the old one gets SIGTERM. Its clients, in a
// process of their own (bench/live-fleet.ts), keep typing through it:
// - no session ends, no client is let go, though the new process's reattach window is shorter than
//   the drain (it must not take the old one's live connections for a crashed predecessor's);
// - every byte each client saw is in its session's journal, and `ended` stays each journal's last record
//   when the teardown runs in the new process while the old one's attachment wrote the journal;
// - a new session attaches through the new process;
// - the old process exits once its last client has left, and not before.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useClientFleet } from './support/client-fleet.js';
import { REUSE_PORT, type HostProcessMark } from '../lib/handover.js';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { JournalWriter, journalPath } from '../journal/writer.js';
import { sealJournal } from '../journal/seal.js';
import { projectRoot } from '../lib/config.js';
import { freeLoopbackPort as freePort } from '../lib/free-port.js';
import { apiAndWorkflows, createTenant, endAllSessions, sleep, useTestStack, waitFor } from './support/harness.js';
import { hostProcessEnv, startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

// 30 is the figure; 10 by default, on a shared 2-core machine (ESSH_TEST_UPGRADE_SESSIONS=30 runs it).
const SESSIONS = Number(process.env.ESSH_TEST_UPGRADE_SESSIONS ?? 10);
const HEARTBEAT_S = 2;
const TIMEOUT_S = 8;
// Shorter than the time the old process drains here: were the new one to take the old one's connections
// for dead ones, it would end their sessions when this window closes.
const REATTACH_WINDOW_S = 5;
const WAITING_LINE = 'waiting for its SIGTERM';

async function journalOf(dataDir: string, id: number) {
  const records = [];
  for await (const r of readRecords(journalPath(dataDir, id))) records.push(r);
  const output = Buffer.concat(records.filter((r) => r.type === RecordType.output).map((r) => r.payload));
  return { records, output };
}

function marks(dataDir: string): HostProcessMark[] {
  const dir = path.join(dataDir, 'host-processes');
  return readdirSync(dir).map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as HostProcessMark);
}

/** The boot id in the connection id the portal noted for the session's client. */
function notedBoot(dataDir: string, id: number): string {
  return /^portal-([0-9a-f]+)-/.exec(readFileSync(path.join(dataDir, 'attached', String(id)), 'utf8'))?.[1] ?? '';
}

/** Tries a TCP connect to the port every few ms until stopped; the longest run of refusals is the gap. */
function watchPort(port: number) {
  let stopped = false;
  let refusedSince = 0;
  let longestGapMs = 0;
  let refusals = 0;
  const done = (async () => {
    while (!stopped) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect({ port, host: '127.0.0.1' });
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
      });
      const now = Date.now();
      if (ok) {
        if (refusedSince) longestGapMs = Math.max(longestGapMs, now - refusedSince);
        refusedSince = 0;
      } else {
        refusals++;
        refusedSince ||= now;
      }
      await sleep(2);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      return { longestGapMs, refusals };
    },
  };
}

describe(`a host process upgraded under ${SESSIONS} live sessions`, () => {
  // The API and the session workflows here; the host (portal, host worker) in processes of their own,
  // on fixed ports (the SSH portal's and /metrics) that the new one takes over. Those end the sessions.
  const stack = useTestStack({
    parts: apiAndWorkflows(),
    env: { ESSH_PORTAL_HEARTBEAT_S: String(HEARTBEAT_S), ESSH_HEARTBEAT_TIMEOUT_S: String(TIMEOUT_S) },
  }, { endSessions: false });
  let hostEnv: Record<string, string>;
  let old: WorkerProcess | undefined;
  let next: WorkerProcess | undefined;

  beforeAll(async () => {
    hostEnv = hostProcessEnv('upgrade', {
      ESSH_SSH_PORT: String(await freePort()), ESSH_METRICS_PORT: String(await freePort()),
      ESSH_REATTACH_WINDOW_S: String(REATTACH_WINDOW_S), ESSH_UPGRADE_DRAIN_S: '600',
    });
    old = await startWorkerProcess(stack, hostEnv);
  }, 180_000);
  afterAll(async () => {
    if (next) await endAllSessions(stack).catch(() => undefined);
    await old?.stop();
    await next?.stop();
  }, 120_000);
  const fleet = useClientFleet();

  it('no session ends, every byte is journaled, a new session attaches through the new process, the old one exits after its last client', async () => {
    const t = await createTenant(stack, { plan: 'enterprise' });
    const opened: number[] = [];
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (opened.length < SESSIONS) {
        const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
        expect(r.status).toBe(201);
        opened.push(r.body.id);
        await fleet.attach(r.body.id, r.body.connect);
      }
    }));
    const oldBoot = marks(stack.dataDir).find((m) => m.pid === old!.pid)!.bootIds[0]!;
    for (const id of opened) expect(notedBoot(stack.dataDir, id)).toBe(oldBoot);
    await fleet.typeStart(100);
    await sleep(2 * HEARTBEAT_S * 1000);

    // The upgrade: the new process first (on Node 20 it waits for the ports), then SIGTERM to the old.
    const startedAt = Date.now();
    next = await startWorkerProcess(stack, hostEnv, REUSE_PORT ? {} : { readyWhen: WAITING_LINE });
    const port = watchPort(Number(hostEnv.ESSH_SSH_PORT));
    await sleep(200);
    const termAt = Date.now();
    old!.signal('SIGTERM');
    await old!.printed('essh worker handing over', 10_000);
    await next.printed('essh worker ready', 60_000);
    const readyAt = Date.now();
    await sleep(500);
    const gap = await port.stop();

    // A new session attaches through the new process.
    const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(r.status).toBe(201);
    const attachMs = await fleet.attach(r.body.id, r.body.connect);
    const newBoot = marks(stack.dataDir).find((m) => m.pid === next!.pid)!.bootIds[0]!;
    expect(notedBoot(stack.dataDir, r.body.id)).toBe(newBoot);
    console.info(
      `host upgrade: the new process was ready ${((readyAt - startedAt) / 1000).toFixed(1)} s after its start, ` +
        `${readyAt - termAt} ms after the old one's SIGTERM; the SSH port refused connections for at most ${gap.longestGapMs} ms ` +
        `(${gap.refusals} refused probes); a new session's client had its prompt ${(attachMs / 1000).toFixed(1)} s after asking`,
    );

    // Longer than the heartbeat timeout and the new process's reattach window: the old process keeps
    // its clients' sessions alive, the new one leaves them be.
    await sleep((TIMEOUT_S + REATTACH_WINDOW_S + 2 * HEARTBEAT_S) * 1000);
    const rows = await stack.runtime.db.selectFrom('operations').select(['id', 'state', 'end_reason', 'end_message'])
      .where('id', 'in', opened).execute();
    const context = () => `old process:\n${old!.output().slice(-2000)}\nnew process:\n${next!.output().slice(-2000)}`;
    expect(rows.filter((row) => row.state !== 'active'), context()).toEqual([]);
    expect(fleet.unexpectedCloses, context()).toEqual([]);
    expect((await fleet.open()).sort()).toEqual([...opened, r.body.id].sort());
    expect(marks(stack.dataDir).find((m) => m.pid === old!.pid)).toMatchObject({ draining: true });
    for (const id of opened) expect(notedBoot(stack.dataDir, id)).toBe(oldBoot);

    // Every byte each client saw, in its journal, in order.
    await fleet.typeStop();
    await sleep(1000);
    const seen = await fleet.seen([...opened, r.body.id]);
    for (const id of [...opened, r.body.id]) {
      const { output } = await journalOf(stack.dataDir, id);
      const got = seen.get(id)!;
      expect(got.length).toBeGreaterThan(100);
      expect(output.subarray(0, got.length).equals(got), `session ${id}: the client saw ${got.length} bytes, the journal holds ${output.length}`).toBe(true);
    }

    // The clients leave one by one; the old process stays while any is attached to it, then exits.
    let oldExit: number | null | undefined;
    void old!.exited.then((code) => (oldExit = code));
    for (const [i, id] of opened.entries()) {
      await fleet.close([id]);
      const ended = await waitFor(`session ${id} to end`, async () => {
        const row = await stack.runtime.db.selectFrom('operations').select(['state', 'end_reason', 'end_message']).where('id', '=', id).executeTakeFirstOrThrow();
        return row.state === 'ended' ? row : undefined;
      }, 60_000);
      expect(ended).toMatchObject({ end_reason: 'disconnect', end_message: 'the client closed the connection' });
      // Torn down by the new process (the old one no longer takes the host's work), after the old one's
      // attachment let the journal go: `ended` is last, the client's bytes before it.
      const { records, output } = await journalOf(stack.dataDir, id);
      expect(records.at(-1)?.type).toBe(RecordType.ended);
      expect(records.filter((rec) => rec.type === RecordType.ended)).toHaveLength(1);
      expect(output.subarray(0, seen.get(id)!.length).equals(seen.get(id)!)).toBe(true);
      if (i < opened.length - 1) expect(oldExit, `the old process exited with ${opened.length - 1 - i} clients left`).toBeUndefined();
    }
    await waitFor('the old process to exit after its last client left', async () => oldExit !== undefined, 30_000);
    expect(oldExit).toBe(0);
    expect(marks(stack.dataDir).map((m) => m.pid)).not.toContain(old!.pid);
    old = undefined;

    // The new process serves on: its session is untouched, and it tears sessions down itself.
    expect(await fleet.open()).toEqual([r.body.id]);
  }, 420_000);
});

describe('a journal sealed while another process appends to it (journal/seal.ts)', () => {
  it('the other process stops at the seal, and `ended` written after the wait is the last record', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'essh-seal-'));
    const id = 4242;
    // The old process's attachment, reduced to its journal: appends a numbered line every few ms as long
    // as the journal is not sealed, as portal/attachment.ts does for each chunk of output.
    const script = path.join(dataDir, 'writer.ts');
    writeFileSync(script, `
      import { JournalHold } from ${JSON.stringify(path.join(projectRoot, 'journal/seal.ts'))};
      import { JournalWriter } from ${JSON.stringify(path.join(projectRoot, 'journal/writer.ts'))};
      const hold = new JournalHold(${JSON.stringify(dataDir)}, ${id});
      const journal = JournalWriter.open(${JSON.stringify(dataDir)}, ${id});
      process.stdout.write('holding\\n');
      let n = 0;
      const timer = setInterval(() => {
        if (hold.sealed) {
          clearInterval(timer);
          journal.close();
          process.stdout.write('stopped after ' + n + '\\n');
          // Lingers, alive, with its hold let go: the sealing side must not wait for the process to exit.
          setTimeout(() => process.exit(0), 3000);
          return;
        }
        // A writer held up between its look at the seal and its append (a loaded host descheduling it):
        // the seal must hold whatever that delay.
        const lookedAt = Date.now();
        while (Date.now() - lookedAt < 5) { /* busy */ }
        journal.output('stdout', Buffer.from('line ' + ++n + '\\n'));
      }, 2);
    `);
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    await waitFor('the writer to hold the journal', async () => out.includes('holding'), 30_000, 20);
    await waitFor('a few lines appended', async () => (await journalOf(dataDir, id)).records.length > 20, 30_000, 20);
    // As endSession does: seal, wait for the other writers, write `ended` at once.
    expect(await sealJournal(dataDir, id)).toBe(true);
    const writer = JournalWriter.open(dataDir, id);
    writer.ended({ end_reason: 'disconnect', end_message: null, ended_by: null, exit_code: null, duration_s: 1, output_complete: true });
    writer.close();
    // The writer let go at the seal, though it still runs.
    expect(child.exitCode).toBeNull();
    await waitFor('the writer to say it stopped', async () => /stopped after \d+/.test(out), 10_000, 20);
    await new Promise((r) => child.once('exit', r));
    const { records, output } = await journalOf(dataDir, id);
    expect(records.at(-1)?.type).toBe(RecordType.ended);
    // Every line the writer appended, in order, before `ended`.
    const n = Number(/stopped after (\d+)/.exec(out)![1]);
    expect(output.toString()).toBe(Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join(''));
  }, 60_000);
});
