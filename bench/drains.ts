// Benchmark helpers for `npm run bench` (bench/drain-throughput.ts): drain throughput for a session
// printing a lot of output into an HTTPS drain on loopback.
//
// - benchShipperThroughput: the host shipper alone. The session's journal is written by the real
//   JournalWriter, in 32 KiB chunks as the portal appends them (at full speed, or paced at a given
//   rate), while the real DrainShipper delivers it to an HTTPS receiver that parses every request
//   (in a worker thread of its own, as a receiver on another machine would be).
// - benchDrainThroughput: end to end through a running essh: a session created through its API, its
//   client attached through the SSH portal (which journals the output the client gets), its host's
//   shipper delivering the journal.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { imageRepository } from '../domain/grants.js';
import { createLogger } from '../lib/log.js';
import type { SecretBox } from '../lib/secrets.js';
import { announceJournalAppended } from '../journal/news.js';
import { JournalWriter } from '../journal/writer.js';
import { drainShell, openPortalShell } from '../cli/portal-client.js';
import { DrainShipper } from '../drains/shipper.js';
import { recordJournalEnded, recordJournalStarted } from '../journal/rows.js';

const run = promisify(execFile);
const now = () => performance.timeOrigin + performance.now();

export async function selfSigned(dir: string) {
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'),
    '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1']);
  return { cert: await readFile(path.join(dir, 'cert.pem'), 'utf8'), key: await readFile(path.join(dir, 'key.pem'), 'utf8') };
}

// The receiver: parses each body as JSON and reports what it got for the operation it is told to
// watch (with the byte count of the line ending its output lines had); "stop" ends it.
const RECEIVER = `
const https = require('node:https');
const { parentPort, workerData } = require('node:worker_threads');
const now = () => performance.timeOrigin + performance.now();
let operationId = null, eol = 0;
let events = 0, bytes = 0, requests = 0, firstAt = 0, lastOutputAt = 0, lastOutputSeq = -1;
const server = https.createServer({ cert: workerData.cert, key: workerData.key }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    requests++;
    const t = now();
    for (const e of JSON.parse(Buffer.concat(chunks).toString('utf8'))) {
      if (e.operation_id !== operationId) continue;
      if (!firstAt) firstAt = t;
      if (e.stream === 'stdout') {
        events++;
        bytes += Buffer.byteLength(e.log) + eol;
        if (e.seq > lastOutputSeq) { lastOutputSeq = e.seq; lastOutputAt = t; }
      } else if (e.event === 'session_ended') {
        parentPort.postMessage({ ended: true, endedAt: t, events, bytes, requests, firstAt, lastOutputAt });
      }
    }
    res.writeHead(200).end('{}');
  });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }));
parentPort.on('message', (m) => {
  if (m === 'stop') server.close(() => process.exit(0));
  else ({ operationId, eol } = m);
});
`;

type ReceiverMessage = Record<string, number | boolean>;

/** The HTTPS receiver in a worker thread of its own, as a receiver on another machine would be. */
export async function startReceiver(cert: string, key: string) {
  const worker = new Worker(RECEIVER, { eval: true, workerData: { cert, key } });
  const messages: ReceiverMessage[] = [];
  let onMessage = () => undefined as void;
  worker.on('message', (m: ReceiverMessage) => {
    messages.push(m);
    onMessage();
  });
  const next = (pred: (m: ReceiverMessage) => boolean, timeoutMs: number, what: string) => new Promise<ReceiverMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the receiver did not get ${what} within ${timeoutMs / 1000} s`)), timeoutMs);
    const check = () => {
      const m = messages.find(pred);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    onMessage = check;
    check();
  });
  const stop = async () => {
    worker.postMessage('stop');
    await new Promise((r) => worker.once('exit', r));
  };
  try {
    const port = Number((await next((m) => 'port' in m, 10_000, 'its port')).port);
    return {
      port,
      /** Counts the output of this operation, whose lines end in `eolBytes` bytes. */
      watch: (operationId: number, eolBytes: number) => worker.postMessage({ operationId, eol: eolBytes }),
      ended: (timeoutMs: number) => next((m) => m.ended === true, timeoutMs, "the session's end"),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface ShipperBenchResult {
  megabytesPrinted: number;
  /** Journal write rate asked for (MB/s); 0: as fast as the writer goes. */
  pacedMBps: number;
  outputEvents: number;
  bytesReceived: number;
  requests: number;
  /** First event received → last output event received. */
  seconds: number;
  eventsPerSecond: number;
  megabytesPerSecond: number;
  /** How long writing the journal took. */
  writeSeconds: number;
  /** Last output appended to the journal → last output event received. */
  lagAfterLastByteMs: number;
  /** `ended` record appended → session_ended event received. */
  lagAfterEndMs: number;
}

/**
 * Writes a session's journal of `megabytes` MB in 100-byte lines (98 × "x" and "\r\n", as a TTY
 * shows `yes`), in 32 KiB chunks, optionally paced at `pacedMBps`, while a DrainShipper on `db`
 * delivers it to an HTTPS drain on loopback. Creates its own account, app, user and drain rows.
 */
export async function benchShipperThroughput(opts: {
  db: Db; secrets: SecretBox; megabytes?: number; pacedMBps?: number; timeoutS?: number;
}): Promise<ShipperBenchResult> {
  const megabytes = opts.megabytes ?? 50;
  const total = megabytes * 1024 * 1024;
  const { db } = opts;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-shipper-bench-'));
  const suffix = randomBytes(3).toString('hex');
  const hostId = `bench-host-${suffix}`;
  let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;
  let shipper: DrainShipper | undefined;
  try {
    const { cert, key } = await selfSigned(dir);
    const at = nowIso();
    const account = await db.insertInto('accounts').values({ handle: `bench-${suffix}`, plan: 'enterprise', max_concurrent_sessions: null, image_prefixes: null, created_at: at })
      .returning('id').executeTakeFirstOrThrow();
    const stack = await db.selectFrom('stacks').select('id').executeTakeFirst()
      ?? await db.insertInto('stacks').values({ name: `bench-${suffix}`, max_session_duration_s: 604800, dedicated: 0, created_at: at }).returning('id').executeTakeFirstOrThrow();
    const app = await db.insertInto('apps').values({
      handle: `bench-${suffix}`, account_id: Number(account.id), stack_id: Number(stack.id), image: 'essh/demo:latest', env: '{}',
      command: null, working_dir: null, user: null, network: null, warm_pool: 0, created_at: at,
    }).returning('id').executeTakeFirstOrThrow();
    const user = await db.insertInto('users').values({ name: 'Bench', email: `bench-${suffix}@example.com`, role: 'member', created_at: at })
      .returning('id').executeTakeFirstOrThrow();
    const op = await db.insertInto('operations').values({
      type: 'execute', account_id: Number(account.id), app_id: Number(app.id), user_id: Number(user.id), stack: 'local', command: null,
      container_size_mb: 1024, state: 'active', status: 'running', end_reason: null, end_message: null, ended_by: null, exit_code: null,
      container_id: randomBytes(32).toString('hex'), workflow_id: null, created_at: at, updated_at: at, connected_at: at, ended_at: null, expires_at: null,
    }).returning('id').executeTakeFirstOrThrow();
    const operationId = Number(op.id);

    receiver = await startReceiver(cert, key);
    receiver.watch(operationId, 2); // "\r\n"
    const { port } = receiver;
    await db.insertInto('log_drains').values({
      account_id: Number(account.id), handle: 'bench', drain_type: 'https', url: opts.secrets.seal(`https://127.0.0.1:${port}/`), token: null,
      ca_cert: cert, index_pattern: null, pipeline: null, drain_ephemeral_sessions: 1, delivered_events: 0, failed_events: 0,
      paused_reason: null, paused_at: null, last_success_at: null, last_error_at: null, last_error: null, last_error_status: null,
      last_error_detail: null, created_at: new Date(Date.now() - 1000).toISOString(),
    }).execute();
    await recordJournalStarted(db, { operationId, accountId: Number(account.id), hostId, createdAt: at });

    shipper = new DrainShipper({ db, log: createLogger('warn'), secrets: opts.secrets, hostId, dataDir: dir, settings: { allowPrivateTargets: true } });
    shipper.start();

    const writer = JournalWriter.open(dir, operationId);
    writer.started({
      user: { id: Number(user.id), name: 'Bench', email: `bench-${suffix}@example.com` }, app: `bench-${suffix}`, app_id: Number(app.id),
      account: `bench-${suffix}`, container_size_mb: 1024, command: null, container_id: null, created_at: at,
    });
    announceJournalAppended(operationId);
    const line = `${'x'.repeat(98)}\r\n`;
    const chunk = Buffer.from(line.repeat(Math.floor(32 * 1024 / line.length)));
    const writeStart = now();
    let written = 0;
    while (written < total) {
      const piece = chunk.subarray(0, Math.min(chunk.length, total - written));
      writer.output('stdout', piece);
      announceJournalAppended(operationId);
      written += piece.length;
      if (opts.pacedMBps) {
        const due = writeStart + (written / (opts.pacedMBps * 1024 * 1024)) * 1000;
        const wait = due - now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        else if (written % (1024 * 1024) < chunk.length) await new Promise((r) => setImmediate(r));
      } else if (written % (1024 * 1024) < chunk.length) {
        await new Promise((r) => setImmediate(r)); // the portal's loop also serves other work
      }
    }
    const lastByteAt = now();
    writer.ended({ end_reason: 'exit', end_message: null, ended_by: null, exit_code: 0, duration_s: 1, output_complete: true });
    const endAt = now();
    writer.close();
    await recordJournalEnded(db, operationId, { endedAt: nowIso(), outputBytes: written });
    announceJournalAppended(operationId);
    const r = await receiver.ended((opts.timeoutS ?? 600) * 1000);
    const seconds = (Number(r.lastOutputAt) - Number(r.firstAt)) / 1000;
    return {
      megabytesPrinted: megabytes, pacedMBps: opts.pacedMBps ?? 0,
      outputEvents: Number(r.events), bytesReceived: Number(r.bytes), requests: Number(r.requests), seconds,
      eventsPerSecond: Math.round(Number(r.events) / seconds),
      megabytesPerSecond: Number((Number(r.bytes) / 1024 / 1024 / seconds).toFixed(2)),
      writeSeconds: Number(((lastByteAt - writeStart) / 1000).toFixed(2)),
      lagAfterLastByteMs: Math.round(Number(r.lastOutputAt) - lastByteAt),
      lagAfterEndMs: Math.round(Number(r.endedAt) - endAt),
    };
  } finally {
    await shipper?.stop();
    await receiver?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export interface DrainBenchResult {
  megabytesPrinted: number;
  outputEvents: number;
  /** Output bytes received (the `log` fields plus their line endings). */
  bytesReceived: number;
  /** From the first event received to the last. */
  seconds: number;
  eventsPerSecond: number;
  megabytesPerSecond: number;
  /** From the last byte the client received (the last printed) to the last output event received. */
  lagAfterLastByteMs: number;
  /** HTTPS requests the drain made. */
  requests: number;
  /** Output bytes the client received through the portal. */
  bytesToClient: number;
  /** The client's first byte to its last. */
  clientSeconds: number;
}

/**
 * End to end: creates its own account, app (image `image`), user and HTTPS drain through the API at
 * `apiUrl` with an operator token, runs one session that prints `megabytes` MB in 100-byte lines to
 * its client (the ssh2 client through the portal, without a PTY, reading as fast as it can), and
 * measures the drain against the client.
 */
export async function benchDrainThroughput(opts: {
  apiUrl: string; operatorToken: string; image: string; stack?: string; megabytes?: number; timeoutS?: number;
}): Promise<DrainBenchResult> {
  const megabytes = opts.megabytes ?? 50;
  const bytes = megabytes * 1024 * 1024;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-drain-bench-'));
  let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;
  try {
    const { cert, key } = await selfSigned(dir);
    receiver = await startReceiver(cert, key);
    const { port } = receiver;

    const api = async (method: string, p: string, token: string, body?: unknown) => {
      const r = await fetch(opts.apiUrl + p, {
        method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined,
      });
      const json = (await r.json()) as any;
      if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(json)}`);
      return json;
    };
    const suffix = randomBytes(3).toString('hex');
    const account = `bench-${suffix}`;
    await api('POST', '/accounts', opts.operatorToken, { handle: account, plan: 'enterprise', image_prefixes: [imageRepository(opts.image)] });
    await api('POST', '/apps', opts.operatorToken, { handle: `bench-${suffix}`, account, stack: opts.stack ?? 'local', image: opts.image });
    const user = await api('POST', '/users', opts.operatorToken, { name: 'Bench', email: `bench-${suffix}@example.com`, role: 'member', accounts: [account] });
    await api('POST', `/accounts/${account}/log_drains`, opts.operatorToken, {
      handle: 'bench', drain_type: 'https', url: `https://127.0.0.1:${port}/`, ca_cert: cert,
    });

    const line = 'x'.repeat(99); // + "\n" = 100 bytes a line
    const session = await api('POST', `/apps/bench-${suffix}/sessions`, user.token, {
      command: ['sh', '-c', `yes ${line} | head -c ${bytes}; exit 0`],
    });
    receiver.watch(session.id, 1); // "\n"
    // The program starts when its client attaches; the last byte the client gets is the last printed.
    const shell = await openPortalShell(session.connect, { pty: null });
    let lastByteAt = 0;
    shell.channel.on('data', () => (lastByteAt = now()));
    shell.channel.end();
    const client = await drainShell(shell, (c) => process.stderr.write(c));
    shell.close();
    if (client.exitCode !== 0 || client.bytes !== bytes) {
      throw new Error(`the session's client got ${client.bytes} of ${bytes} bytes and exit status ${client.exitCode}`);
    }
    const r = await receiver.ended((opts.timeoutS ?? 600) * 1000);
    const outputEvents = Number(r.events);
    const bytesReceived = Number(r.bytes);
    const seconds = (Number(r.lastOutputAt) - Number(r.firstAt)) / 1000;
    return {
      megabytesPrinted: megabytes, outputEvents, bytesReceived, seconds,
      eventsPerSecond: Math.round(outputEvents / seconds),
      megabytesPerSecond: Number((bytesReceived / 1024 / 1024 / seconds).toFixed(2)),
      lagAfterLastByteMs: Math.round(Number(r.lastOutputAt) - lastByteAt),
      requests: Number(r.requests),
      bytesToClient: client.bytes,
      clientSeconds: Number(client.seconds.toFixed(2)),
    };
  } finally {
    await receiver?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
