// Real receivers for the drain tests: TLS certificates from openssl, an HTTPS endpoint, a faithful
// Elasticsearch `_bulk` endpoint, and a way to drive a session's TTY before the portal exists.
import { execFile } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { heartbeatSignal, sessionWorkflowId } from '../workflows/definitions.js';
import { docker, type TestStack } from './harness.js';

const run = promisify(execFile);

export interface Cert {
  dir: string;
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
}

/** A self-signed certificate for localhost/127.0.0.1 (it is its own CA: the drains get it as `ca_cert`). */
export async function selfSignedCert(): Promise<Cert> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-cert-'));
  // rsyslogd reads the files for as long as the test file runs; they go with the test process.
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const certPath = path.join(dir, 'cert.pem');
  const keyPath = path.join(dir, 'key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ]);
  return { dir, certPath, keyPath, cert: await readFile(certPath, 'utf8'), key: await readFile(keyPath, 'utf8') };
}

export interface ReceivedRequest {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * An HTTPS server on loopback that records every request. `answer` decides the reply; `down()` closes
 * the listening socket (the drain sees connection refused) and `up()` listens again on the same port.
 */
export class HttpsReceiver {
  readonly requests: ReceivedRequest[] = [];
  answer: (req: ReceivedRequest) => { status: number; body?: string; headers?: Record<string, string> } = () => ({ status: 200, body: '{}' });
  /** A slow receiver: each answer comes this long after the request. */
  delayMs = 0;
  private server?: https.Server;
  port = 0;

  constructor(private readonly cert: Cert) {}

  async up(): Promise<void> {
    const server = https.createServer({ cert: this.cert.cert, key: this.cert.key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: ReceivedRequest = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
        const reply = () => {
          const a = this.answer(r);
          if (a.status >= 200 && a.status < 300) this.requests.push(r);
          res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
          res.end(a.body ?? '');
        };
        if (this.delayMs) setTimeout(reply, this.delayMs);
        else reply();
      });
    });
    await new Promise<void>((resolve, reject) => server.listen(this.port, '127.0.0.1', resolve).once('error', reject));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  get url() {
    return `https://127.0.0.1:${this.port}`;
  }
}

/** Every JSON event the HTTPS receiver accepted, in arrival order. */
export function eventsOf(rx: HttpsReceiver): Record<string, any>[] {
  return rx.requests.flatMap((r) => JSON.parse(r.body) as Record<string, any>[]);
}

/**
 * A terminal on the session's container: attaches to its TTY the way the portal does, and keeps the
 * session active with heartbeats. `output` is everything the terminal showed since attaching.
 */
export class SessionTerminal {
  output = '';
  private constructor(private readonly stream: Duplex, private readonly beat: NodeJS.Timeout) {}

  static async open(stack: TestStack, operationId: number): Promise<SessionTerminal> {
    const handle = stack.runtime.client.workflow.getHandle(sessionWorkflowId(operationId));
    const beat = () => handle.signal(heartbeatSignal, { connection_id: 'test-terminal' }).catch(() => undefined);
    await beat();
    const stream = (await docker.getContainer(`essh-${operationId}`).attach({
      stream: true, stdin: true, stdout: true, stderr: true, hijack: true,
    })) as unknown as Duplex;
    const t = new SessionTerminal(stream, setInterval(beat, 1000));
    // A character can be split across two chunks of the stream: decoded chunk by chunk, it would show
    // as two replacement characters the terminal never showed.
    const decoder = new StringDecoder('utf8');
    stream.on('data', (c: Buffer) => (t.output += decoder.write(c)));
    return t;
  }

  type(text: string) {
    this.stream.write(text);
  }

  async waitFor(pattern: RegExp | string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(typeof pattern === 'string' ? this.output.includes(pattern) : pattern.test(this.output))) {
      if (Date.now() > deadline) throw new Error(`terminal never showed ${pattern}; it showed:\n${this.output.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close() {
    clearInterval(this.beat);
    this.stream.destroy();
  }
}
