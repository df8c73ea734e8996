import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordType } from '../journal/format.js';
import { readEvents, readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { apiAndWorkflows, createTenant, endAllSessions, openSession, sleep, useTestStack, waitFor } from './support/harness.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { hostProcessEnv, startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

// The API and the main worker run in the test process; the stack's host (its portal, its journals, its
// drain shipper, its container activities) runs in a child process that is SIGKILLed while a session
// prints and a batch is in flight, then started again as the same host.
const stack = useTestStack({ parts: apiAndWorkflows() }, { endSessions: false });
const rx = useHttpsReceiver((r) => { r.delayMs = 150; }); // a slow receiver, so that the kill lands while a batch is in flight
const hosts: WorkerProcess[] = [];
const HOST_ENV = hostProcessEnv('restart', {
  ESSH_DRAIN_BACKOFF_CAP_S: '2', ESSH_DRAIN_BATCH_EVENTS: '25',
  // The restarted host keeps a killed one's sessions for their clients to reattach (120 s by default)
  // when it starts before the heartbeat timeout has ended them, as a loaded machine's workflow task may
  // be late to: short here, so that the session this test's client left ends either way.
  ESSH_REATTACH_WINDOW_S: '3',
  // The receiver listens on loopback.
  ESSH_DRAINS_ALLOW_PRIVATE: '1',
});

beforeAll(async () => {
});
afterAll(async () => {
  if (stack && hosts.length) await endAllSessions(stack).catch(() => undefined);
  for (const h of hosts) await h.kill('SIGKILL');
}, 120_000);

describe('a host process killed during delivery', () => {
  it('delivers every seq its journal holds once started again, each seq with one content; the journal holds every byte the client got', async () => {
    const tenant = await createTenant(stack, { plan: 'scale' });
    await addHttpsDrain(stack, rx, tenant.account, 'https', '/in');
    hosts.push(await startWorkerProcess(stack, HOST_ENV));

    // The client attaches through the host's portal (the API's connect block names it).
    const session = await openSession(stack, tenant, {
      command: ['sh', '-c', 'i=0; while [ $i -lt 400 ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done; exit 0'],
      endTimeoutMs: 90_000,
    });
    const { id } = session;
    const ofSession = () => eventsOf(rx).filter((e) => e.operation_id === id);
    await waitFor('some lines to arrive', async () => ofSession().filter((e) => e.stream === 'stdout').length > 40, 60_000, 50);
    await waitFor('a batch in flight', async () => rx.inFlight > 0, 10_000, 5);
    await hosts[0]!.kill('SIGKILL');
    const seenAtKill = ofSession().length;
    // The connection went with the portal: what the client got is all it will get.
    expect(await session.shell.exitCode).toBe(null);
    const received = session.stdout();
    expect(received.length).toBeGreaterThan(0);

    await sleep(2000);
    hosts.push(await startWorkerProcess(stack, HOST_ENV));
    // The session lost its client: it ends, and the restarted host tears it down and closes its journal.
    const run = await session.done;
    expect(run.ended).toMatchObject({ end_reason: 'disconnect' });
    await waitFor('the session_ended event', async () => ofSession().some((e) => e.event === 'session_ended'), 60_000, 300);
    const events = ofSession();
    expect(events.length).toBeGreaterThan(seenAtKill);

    // The journal: the bytes the client received are all in it, in order, and it ends with `ended`.
    const file = journalPath(stack.dataDir, id);
    const output: Buffer[] = [];
    for await (const r of readRecords(file)) if (r.type === RecordType.output) output.push(r.payload);
    const journaled = Buffer.concat(output);
    expect(journaled.length).toBeGreaterThanOrEqual(received.length);
    expect(journaled.subarray(0, received.length).equals(received)).toBe(true);
    const journal: { seq: number; kind: string; offset: number; log?: string }[] = [];
    for await (const e of readEvents(file)) {
      if (e.kind === 'resize') continue;
      journal.push({ seq: e.seq, kind: e.kind, offset: e.offset, log: e.kind === 'output' ? e.data.toString('utf8').replace(/\r?\n$/, '') : undefined });
    }
    expect(journal.at(-1)!.kind).toBe('session_ended');

    // Each seq the drain got is one event: a batch delivered again (at least once) is the same events.
    const bySeq = new Map<number, string>();
    for (const e of events) {
      const text = JSON.stringify(e);
      if (bySeq.has(e.seq)) expect(text, `seq ${e.seq} delivered twice with different content`).toBe(bySeq.get(e.seq));
      bySeq.set(e.seq, text);
    }
    // Every seq the journal holds arrived, and nothing else: the same events the journal cuts.
    expect([...bySeq.keys()].sort((a, b) => a - b)).toEqual(journal.map((j) => j.seq));
    for (const j of journal) {
      const e = JSON.parse(bySeq.get(j.seq)!) as Record<string, any>;
      expect(e.offset, `offset of seq ${j.seq}`).toBe(j.offset);
      if (j.kind === 'output') expect(e.log, `log of seq ${j.seq}`).toBe(j.log);
      else expect(e.event, `event of seq ${j.seq}`).toBe(j.kind);
    }
    // No line twice, none skipped: the session's lines up to where the host died, each in one seq.
    const lines = journal.filter((j) => j.kind === 'output').map((j) => j.log);
    expect(lines.length).toBeGreaterThan(40);
    expect(lines).toEqual(lines.map((_, i) => `line ${i}`));
    const repeated = events.length - bySeq.size;
    console.info(`drains-restart: ${events.length} events received for ${bySeq.size} seqs (${repeated} delivered again)`);
  }, 240_000);
});
