// A benchmark helper for `npm run bench`: drain throughput for a session printing a lot of output to an
// HTTPS drain on loopback. It drives a running essh (API, workers, host agent) through its public API
// only, so the figures include capture, the outbox, shipping and the receiver's parsing.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import Docker from 'dockerode';

const run = promisify(execFile);

export interface DrainBenchResult {
  megabytesPrinted: number;
  outputEvents: number;
  /** Output bytes received (the `log` fields plus their line endings). */
  bytesReceived: number;
  /** From the first event received to the last. */
  seconds: number;
  eventsPerSecond: number;
  megabytesPerSecond: number;
  /** From the container's exit (its last byte printed) to the last event received. */
  lagAfterLastByteMs: number;
  /** HTTPS requests the drain made. */
  requests: number;
}

/**
 * Creates its own account, app (image `image`), user and HTTPS drain through the API at `apiUrl` with an
 * operator token, runs one session that prints `megabytes` MB in 100-byte lines, and measures the drain.
 */
export async function benchDrainThroughput(opts: {
  apiUrl: string; operatorToken: string; image: string; stack?: string; megabytes?: number; timeoutS?: number;
}): Promise<DrainBenchResult> {
  const megabytes = opts.megabytes ?? 50;
  const bytes = megabytes * 1024 * 1024;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-drain-bench-'));
  const docker = new Docker();
  let server: https.Server | undefined;
  let events: Readable | undefined;
  try {
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'),
      '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const cert = await readFile(path.join(dir, 'cert.pem'), 'utf8');
    const key = await readFile(path.join(dir, 'key.pem'), 'utf8');

    let outputEvents = 0;
    let bytesReceived = 0;
    let requests = 0;
    let firstAt = 0;
    let lastAt = 0;
    let operationId = 0;
    let ended: () => void = () => undefined;
    const endedEvent = new Promise<void>((r) => (ended = r));
    server = https.createServer({ cert, key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        requests++;
        const now = performance.now();
        for (const e of JSON.parse(Buffer.concat(chunks).toString('utf8')) as { operation_id: number; stream: string; log: string; event?: string }[]) {
          if (e.operation_id !== operationId) continue;
          if (!firstAt) firstAt = now;
          if (e.stream === 'stdout') {
            outputEvents++;
            bytesReceived += Buffer.byteLength(e.log) + 2;
            lastAt = now;
          } else if (e.event === 'session_ended') ended();
        }
        res.writeHead(200).end('{}');
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;

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
    await api('POST', '/accounts', opts.operatorToken, { handle: account, plan: 'enterprise' });
    await api('POST', '/apps', opts.operatorToken, { handle: `bench-${suffix}`, account, stack: opts.stack ?? 'local', image: opts.image });
    const user = await api('POST', '/users', opts.operatorToken, { name: 'Bench', email: `bench-${suffix}@example.com`, role: 'member', accounts: [account] });
    await api('POST', `/accounts/${account}/log_drains`, opts.operatorToken, {
      handle: 'bench', drain_type: 'https', url: `https://127.0.0.1:${port}/`, ca_cert: cert,
    });

    // The container's exit is the moment its last byte was printed.
    let diedAt = 0;
    events = (await docker.getEvents({ filters: { type: ['container'], event: ['die'] } })) as unknown as Readable;
    events.on('data', (c: Buffer) => {
      for (const line of c.toString('utf8').split('\n').filter(Boolean)) {
        const e = JSON.parse(line) as { Actor?: { Attributes?: Record<string, string> } };
        if (e.Actor?.Attributes?.name === `essh-${operationId}`) diedAt = performance.now();
      }
    });
    const line = 'x'.repeat(98); // + "\r\n" from the TTY = 100 bytes a line
    const session = await api('POST', `/apps/bench-${suffix}/sessions`, user.token, {
      command: ['sh', '-c', `yes ${line} | head -c ${bytes}; exit 0`],
    });
    operationId = session.id;
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`the drain did not receive the session's end within ${opts.timeoutS ?? 600} s`)), (opts.timeoutS ?? 600) * 1000).unref());
    await Promise.race([endedEvent, timeout]);
    const seconds = (lastAt - firstAt) / 1000;
    return {
      megabytesPrinted: megabytes, outputEvents, bytesReceived, seconds,
      eventsPerSecond: Math.round(outputEvents / seconds),
      megabytesPerSecond: Number((bytesReceived / 1024 / 1024 / seconds).toFixed(2)),
      lagAfterLastByteMs: Math.round(lastAt - diedAt),
      requests,
    };
  } finally {
    events?.destroy();
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((r) => server!.close(() => r()));
    }
    await rm(dir, { recursive: true, force: true });
  }
}
