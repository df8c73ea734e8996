// `essh ssh` connects to the portal it used last while the API creates the session (issue 20): the
// CLI as installed (bin/essh), the real API, portal, Temporal and Docker. The API is reached through a
// small HTTP relay of the test's that can hold back the answer to POST /apps/{app}/sessions, so that
// what the CLI does before it has the answer can be seen: the portal's connections at that moment,
// and a throwaway SSH server's.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { createTenant, useTestStack, waitFor, workflowBundle } from './support/harness.js';
import { runToEnd, sleep } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh');
/** The portal closes a connection that has not authenticated after this long; an early connection may outlive it. */
const AUTH_TIMEOUT_S = 2;
const stack = useTestStack({
  env: { ESSH_PORTAL_AUTH_TIMEOUT_S: String(AUTH_TIMEOUT_S) },
  parts: { api: true, worker: true, hostStacks: ['local'], workflowBundle: workflowBundle(), portal: true },
});
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let memoryFile: string;
let relay: http.Server;
let relayUrl: string;
/** Run before the relay passes on an answer to POST /apps/{app}/sessions. */
let holdAnswer: () => Promise<void> = async () => {};
/** The portal's connections still authenticating when each such answer was passed on. */
let authenticatingAtAnswer: number[] = [];
/** TCP connections the portal accepted, and how many of them before the current run. */
let portalConnections = 0;
let portalConnectionsBefore = 0;
const connectionsThisRun = () => portalConnections - portalConnectionsBefore;
/** Resolves once `check` holds (polled every 20 ms), for a hold on the answer. */
const until = (what: string, check: () => boolean, timeoutMs = 10_000) => waitFor(what, async () => check(), timeoutMs, 20).then(() => undefined);

const portal = () => stack.runtime.portal!;

beforeAll(async () => {
  tenant = await createTenant(stack);
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-early-portal-'));
  memoryFile = path.join(dir, 'portals.json');
  // The portal's own listener (a private field): every TCP connection a run makes to it is counted.
  (portal() as unknown as { server: net.Server }).server.on('connection', () => portalConnections++);
  relay = http.createServer((req, res) => {
    const upstream = http.request(new URL(req.url ?? '/', stack.url), { method: req.method, headers: req.headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (c: Buffer) => chunks.push(c));
      answer.on('end', async () => {
        if (req.method === 'POST' && /^\/apps\/[^/?]+\/sessions$/.test(req.url ?? '')) {
          // A hold that timed out lets the answer go all the same: the run's expectations say what was missing.
          await holdAnswer().catch(() => undefined);
          authenticatingAtAnswer.push(portal().figures().unauthenticated);
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.end(Buffer.concat(chunks));
      });
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  relayUrl = `http://127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
});
afterAll(async () => {
  relay?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** `essh ssh -T APP -- command…` as installed, its API the relay; what the portal saw of it. */
async function esshSsh(command: string[], hold: () => Promise<void> = async () => {}) {
  holdAnswer = hold;
  authenticatingAtAnswer = [];
  portalConnectionsBefore = portalConnections;
  const env = { ...process.env, ESSH_API_URL: relayUrl, ESSH_TOKEN: tenant.token, ESSH_CONFIG: path.join(dir, 'essh.json') };
  const r = await runToEnd(ESSH, ['ssh', '-T', tenant.app, '--', ...command], { env, timeoutMs: 60_000 });
  return { ...r, stdout: r.stdout.toString(), authenticatingAtAnswer: authenticatingAtAnswer[0], portalConnections: connectionsThisRun() };
}

/** The portal's address and host key as the API announces them in a session's `connect` block. */
async function announcedPortal() {
  const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command: ['true'] });
  expect(r.status).toBe(201);
  await stack.api.post(`/sessions/${r.body.id}/terminate`, tenant.token, {});
  const { host, port, host_key } = r.body.connect as { host: string; port: number; host_key: string };
  return { host, port, host_key };
}

const readMemory = async () => JSON.parse(await readFile(memoryFile, 'utf8')) as Record<string, { host: string; port: number; host_key: string }>;

/** A key pair of the test's own, made by ssh-keygen: the private key's text and the public key's line. */
async function otherKey(name: string) {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', file]);
  return { privateKey: await readFile(file, 'utf8'), publicKey: (await readFile(`${file}.pub`, 'utf8')).trim() };
}

describe('essh ssh: the portal used last is connected to while the API creates the session', () => {
  it('the first run connects once answered and remembers the portal (0600, no secret); the next one connects before the answer and authenticates on that connection', async () => {
    await rm(memoryFile, { force: true });
    // Held for a while: a CLI with nothing remembered must not connect before it has the answer.
    const first = await esshSsh(['echo', 'first'], () => sleep(500));
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe('first\n');
    expect(first.authenticatingAtAnswer).toBe(0);
    expect(first.portalConnections).toBe(1);

    const announced = await announcedPortal();
    expect(await readMemory()).toEqual({ [relayUrl]: announced });
    expect((await stat(memoryFile)).mode & 0o777).toBe(0o600);
    const text = await readFile(memoryFile, 'utf8');
    expect(text).not.toContain(tenant.token);
    expect(text).not.toMatch(/token|session-\d/);

    // Held until the CLI's connection is at the portal: it is the only connection the run makes, so
    // the shell ran on the connection made before the answer.
    const second = await esshSsh(['echo', 'second'], () => until('the early connection at the portal', () => portal().figures().unauthenticated >= 1));
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe('second\n');
    expect(second.authenticatingAtAnswer).toBe(1);
    expect(second.portalConnections).toBe(1);
  }, 120_000);

  it('a remembered host key the portal no longer has: the early connection is refused by the CLI, a new one works, and the memory is put right', async () => {
    const announced = await announcedPortal();
    await writeFile(memoryFile, JSON.stringify({ [relayUrl]: { ...announced, host_key: (await otherKey('rotated')).publicKey } }));
    const r = await esshSsh(['echo', 'rotated'], () => until('the early connection', () => connectionsThisRun() > 0));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('rotated\n');
    expect(r.portalConnections).toBe(2);
    expect(await readMemory()).toEqual({ [relayUrl]: announced });
  }, 120_000);

  it('a remembered portal other than the answer\'s gets the key exchange but never the token; the session opens on the answer\'s portal', async () => {
    const other = await otherKey('elsewhere');
    const seen = { connections: 0, handshakes: 0, authentications: [] as string[] };
    const elsewhere = new ssh2.Server({ hostKeys: [other.privateKey] }, (client) => {
      seen.connections++;
      client.on('handshake', () => seen.handshakes++);
      client.on('authentication', (ctx) => {
        seen.authentications.push(`${ctx.method} ${ctx.username}`);
        ctx.reject();
      });
      client.on('error', () => undefined);
    });
    await new Promise<void>((r) => elsewhere.listen(0, '127.0.0.1', r));
    try {
      const port = (elsewhere.address() as net.AddressInfo).port;
      await writeFile(memoryFile, JSON.stringify({ [relayUrl]: { host: '127.0.0.1', port, host_key: other.publicKey } }));
      // Held until the CLI has checked that server's key and so waits for credentials on it.
      const r = await esshSsh(['echo', 'elsewhere'], () => until('the key exchange with the remembered server', () => seen.handshakes > 0));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('elsewhere\n');
      expect(seen.handshakes).toBe(1);
      expect(seen.authentications).toEqual([]);
      expect(r.portalConnections).toBe(1);
      expect((await readMemory())[relayUrl]).toEqual(await announcedPortal());
    } finally {
      elsewhere.close();
    }
  }, 120_000);

  it('an early connection the portal closes for not authenticating in time (the API slow to answer) is replaced by a new one', async () => {
    await writeFile(memoryFile, JSON.stringify({ [relayUrl]: await announcedPortal() }));
    const r = await esshSsh(['echo', 'late'], async () => {
      await until('the early connection at the portal', () => portal().figures().unauthenticated >= 1);
      // The portal's deadline for authenticating passes while the answer is held.
      await until('the portal closing the early connection', () => portal().figures().unauthenticated === 0, (AUTH_TIMEOUT_S + 10) * 1000);
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('late\n');
    expect(r.authenticatingAtAnswer).toBe(0);
    expect(r.portalConnections).toBe(2);
  }, 120_000);
});
