// Real receivers for the drain tests: TLS certificates from openssl, an HTTPS endpoint that records
// what it accepted, and a user's terminal on a session through the SSH portal.
import { execFile } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect } from 'vitest';
import { closeNow } from '../../api/graceful-close.js';
import { freeLoopbackPort } from '../../lib/free-port.js';
import { openPortalShell, type PortalShell, type PortalTarget } from '../../cli/portal-client.js';
import { standIn, waitFor, type TestStack } from './harness.js';

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
  /** Requests received and not answered yet. */
  inFlight = 0;
  private server?: https.Server;
  port = 0;

  constructor(readonly cert: Cert) {}

  async up(): Promise<void> {
    const server = https.createServer({ cert: this.cert.cert, key: this.cert.key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: ReceivedRequest = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
        this.inFlight++;
        const reply = () => {
          this.inFlight--;
          const a = this.answer(r);
          if (a.status >= 200 && a.status < 300) this.requests.push(r);
          res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
          res.end(a.body ?? '');
        };
        if (this.delayMs) setTimeout(reply, this.delayMs);
        else reply();
      });
    });
    // Tests take the receiver down and up again on its port (a drain outage): one the kernel will not
    // hand to an outgoing connection meanwhile.
    if (!this.port) this.port = await freeLoopbackPort();
    await new Promise<void>((resolve, reject) => server.listen(this.port, '127.0.0.1', resolve).once('error', reject));
    this.server = server;
  }

  async down(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeNow(s);
  }

  get url() {
    return `https://127.0.0.1:${this.port}`;
  }
}

/** Every JSON event the HTTPS receiver accepted, in arrival order. */
export function eventsOf(rx: HttpsReceiver): Record<string, any>[] {
  return rx.requests.flatMap((r) => JSON.parse(r.body) as Record<string, any>[]);
}

/** The events of session `id` the receiver accepted, in arrival order. */
export function sessionEventsAt(rx: HttpsReceiver, id: number): Record<string, any>[] {
  return eventsOf(rx).filter((e) => e.operation_id === id);
}

/** Waits until the receiver has session `id`'s session_ended event. */
export async function waitForEndedAt(rx: HttpsReceiver, id: number, timeoutMs = 30_000, everyMs = 200): Promise<void> {
  await waitFor(`the session_ended event of ${id}`, async () => sessionEventsAt(rx, id).some((e) => e.event === 'session_ended'), timeoutMs, everyMs);
}

/**
 * A user's terminal on a session, through the real SSH portal: the ssh2 client with a PTY of `size`
 * and the session's one-time token, as `essh ssh` attaches (the program starts then). `output` is
 * everything the terminal was sent, decoded as the terminal would.
 */
export class PortalTerminal {
  output = '';
  private constructor(private readonly shell: PortalShell) {}

  static async open(connect: PortalTarget, size = { cols: 80, rows: 24 }): Promise<PortalTerminal> {
    const shell = await openPortalShell(connect, { pty: size });
    const t = new PortalTerminal(shell);
    // A character can be split across two chunks of the stream: decoded chunk by chunk, it would show
    // as two replacement characters the terminal never showed.
    const decoder = new StringDecoder('utf8');
    shell.channel.on('data', (c: Buffer) => (t.output += decoder.write(c)));
    shell.channel.stderr.on('data', (c: Buffer) => (t.output += c.toString('utf8')));
    return t;
  }

  /** The exit status the portal sent when the channel closed (null without one). */
  get exitCode() {
    return this.shell.exitCode;
  }

  type(text: string) {
    this.shell.channel.write(text);
  }

  async waitFor(pattern: RegExp | string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(typeof pattern === 'string' ? this.output.includes(pattern) : pattern.test(this.output))) {
      if (Date.now() > deadline) throw new Error(`terminal never showed ${pattern}; it showed:\n${this.output.slice(-2000)}`);
      await sleep(50);
    }
  }

  close() {
    this.shell.close();
  }
}

/**
 * An HTTPS receiver with a certificate of its own (`rx.cert`, the drains' `ca_cert`) for the file or
 * describe: up before its later hooks (`configure` sets its answers first), down and its certificate
 * removed after their clean-up.
 */
export function useHttpsReceiver(configure: (rx: HttpsReceiver) => void = () => undefined): HttpsReceiver {
  let rx: HttpsReceiver | undefined;
  beforeAll(async () => {
    rx = new HttpsReceiver(await selfSignedCert());
    configure(rx);
    await rx.up();
  });
  afterAll(async () => {
    await rx?.down();
    if (rx) await rm(rx.cert.dir, { recursive: true, force: true });
  });
  return standIn(() => rx, 'the HTTPS receiver');
}

/** Adds an HTTPS drain of `account` to the receiver at `urlPath` (as the operator, unless a token is given); the drain as created. */
export async function addHttpsDrain(stack: TestStack, rx: HttpsReceiver, account: string, handle: string, urlPath: string, token = stack.adminToken) {
  const d = await stack.api.post(`/accounts/${account}/log_drains`, token, { handle, drain_type: 'https', url: `${rx.url}${urlPath}`, ca_cert: rx.cert.cert });
  expect(d.status, JSON.stringify(d.body)).toBe(201);
  return d.body as { id: number } & Record<string, any>;
}
