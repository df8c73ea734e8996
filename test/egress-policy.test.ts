import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { listEgressRules } from '../host/egress.js';
import { loadConfig } from '../lib/config.js';
import { sessionNetworkName } from '../lib/networks.js';
import { startRuntime } from '../server/runtime.js';
import { createTenant, docker, endAllSessions, runInSession, startTestStack, waitFor, type TestStack } from './support/harness.js';

/**
 * Egress of session containers (docs/threat-model.md, CONTRACT §7): from inside a session, through the
 * portal, to listeners this file puts on this machine. A network namespace of its own, joined to the
 * host by a veth pair, stands for the world beyond the host: the cloud metadata address, a link-local
 * one and two private ones live there, routed through the host as real ones would be (the forward
 * path); a listener on every address of the host stands for its own services (the input path). No
 * probe leaves this machine.
 */

const run = promisify(execFile);
const suffix = randomBytes(3).toString('hex');
const ns = `essh-eg-${suffix}`;
const vethHost = `eg${suffix}h`;
const vethNs = `eg${suffix}n`;
const PORT = 8080;
const target = {
  metadata: '169.254.169.254',
  linkLocal: '169.254.77.7',
  allowed: '10.77.0.2',
  denied: '10.77.0.3',
};
const policy = { ESSH_EGRESS_DENY: '10.77.0.0/16', ESSH_EGRESS_ALLOW: `${target.allowed}/32,${target.metadata}/32,${target.linkLocal}/32` };

let stack: TestStack;
let tenant: Awaited<ReturnType<typeof createTenant>>;
let outside: ChildProcess | undefined;
let hostListener: net.Server | undefined;
let hostPort = 0;
const undo: (() => Promise<unknown>)[] = [];

const ip = (...args: string[]) => run('ip', args);

/**
 * This machine's IPv4 addresses but loopback, as a container would try them; not those of other
 * Docker networks' bridges (br-…), which other test files make and remove meanwhile.
 */
const hostAddresses = () => Object.entries(os.networkInterfaces()).filter(([name]) => !name.startsWith('br-'))
  .flatMap(([, addresses]) => addresses ?? []).filter((a) => a.family === 'IPv4' && !a.internal).map((a) => a.address);

/** What each probe got: the listener's greeting, or nc's complaint. */
async function probeFromSession(t: { app: string; token: string }, targets: string[]): Promise<Map<string, string>> {
  // `gateway` is the host's address on the session network, as the container's route names it.
  const script = ['gw=$(ip route | awk \'/^default/ {print $3}\')', ...targets.map((hp) => {
    const [h, p] = hp.split(':');
    const host = h === 'gateway' ? '$gw' : h;
    return `echo "${hp} $(nc -w 3 ${host} ${p} </dev/null 2>&1 | head -n 1)"`;
  })].join('; ');
  const r = await runInSession(stack, t, { command: ['sh', '-c', script], endTimeoutMs: 60_000 });
  expect(r.exitCode, r.stderr.toString()).toBe(0);
  return new Map(r.stdout.toString().trim().split('\n').map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));
}

/** Connects from the host itself: the listener is there and the address routes, so a refusal from a session is the policy's. */
function greetingFromHost(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, timeout: 3000 }, () => undefined);
    let got = '';
    s.on('data', (c) => (got += c.toString()));
    s.on('end', () => resolve(got.trim()));
    s.on('timeout', () => s.destroy(new Error(`no answer from ${host}:${port}`)));
    s.on('error', reject);
  });
}

beforeAll(async () => {
  await ip('netns', 'add', ns);
  undo.unshift(() => ip('netns', 'del', ns));
  await ip('link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs);
  undo.unshift(() => ip('link', 'del', vethHost));
  await ip('link', 'set', vethNs, 'netns', ns);
  await ip('addr', 'add', '10.77.0.1/24', 'dev', vethHost);
  await ip('link', 'set', vethHost, 'up');
  for (const a of ['10.77.0.2/24', `${target.denied}/32`, `${target.metadata}/32`, `${target.linkLocal}/32`]) await ip('-n', ns, 'addr', 'add', a, 'dev', vethNs);
  await ip('-n', ns, 'link', 'set', vethNs, 'up');
  await ip('-n', ns, 'route', 'add', 'default', 'via', '10.77.0.1');
  // The metadata and link-local addresses route to the namespace, as they would to the cloud's network.
  for (const a of [target.metadata, target.linkLocal]) await ip('route', 'add', `${a}/32`, 'dev', vethHost);
  const greeter = `require('net').createServer((s) => s.end('reached ' + s.localAddress + '\\n')).listen(${PORT}, '0.0.0.0', () => console.log('listening'))`;
  outside = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', greeter], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    outside!.stdout!.once('data', () => resolve());
    outside!.once('exit', (code) => reject(new Error(`the listener in ${ns} exited (${code})`)));
  });
  hostListener = net.createServer((s) => s.end('reached the host\n'));
  await new Promise<void>((r) => hostListener!.listen(0, '0.0.0.0', r));
  hostPort = (hostListener.address() as net.AddressInfo).port;

  stack = await startTestStack({ env: policy });
  tenant = await createTenant(stack);
}, 120_000);

afterAll(async () => {
  if (stack) {
    await endAllSessions(stack).catch(() => undefined);
    await stack.stop();
  }
  outside?.kill();
  await new Promise((r) => (hostListener ? hostListener.close(r) : r(undefined)));
  for (const u of undo) await u().catch(() => undefined);
}, 120_000);

describe('egress of session containers', () => {
  it('refuses metadata, link-local and the host\'s own addresses even when allowed, and applies the operator\'s deny and allow lists', async () => {
    // Each listener answers the host itself.
    for (const a of Object.values(target)) expect(await greetingFromHost(a, PORT)).toBe(`reached ${a}`);
    const own = ['gateway', ...hostAddresses()];
    const got = await probeFromSession(tenant, [...Object.values(target).map((a) => `${a}:${PORT}`), ...own.map((a) => `${a}:${hostPort}`)]);
    const network = await docker.getNetwork(sessionNetworkName(stack.runtime.instanceId)).inspect();
    for (const a of [network.IPAM?.Config?.[0]?.Gateway ?? 'no gateway', ...hostAddresses()]) {
      expect(await greetingFromHost(a, hostPort), a).toBe('reached the host');
    }
    expect(got.get(`${target.allowed}:${PORT}`)).toBe(`reached ${target.allowed}`);
    for (const refused of [target.metadata, target.linkLocal, target.denied].map((a) => `${a}:${PORT}`).concat(own.map((a) => `${a}:${hostPort}`))) {
      // Refused by the rules (an ICMP "administratively prohibited": nc says no route), not timed out.
      expect(got.get(refused), refused).toMatch(/No route to host/);
    }
  });

  it('puts back rules removed outside essh', async () => {
    const installation = stack.runtime.instanceId;
    const set = await listEgressRules(installation);
    expect(set).toContain('10.77.0.0/16');
    await run('nft', ['delete', 'table', 'inet', `essh_${installation}`]);
    await waitFor('the host to set the rules again', async () => (await listEgressRules(installation)) === set, 30_000);
    const got = await probeFromSession(tenant, [`${target.metadata}:${PORT}`, `${target.denied}:${PORT}`]);
    expect(got.get(`${target.metadata}:${PORT}`)).toMatch(/No route to host/);
    expect(got.get(`${target.denied}:${PORT}`)).toMatch(/No route to host/);
  });

  it('by default refuses the private ranges, and the installation\'s removal leaves no rules behind', async () => {
    const plain = await startTestStack();
    try {
      const t = await createTenant(plain);
      const r = await runInSession(plain, t, { command: ['sh', '-c', `nc -w 3 ${target.allowed} ${PORT} </dev/null 2>&1 | head -n 1`], endTimeoutMs: 60_000 });
      expect(r.stdout.toString()).toMatch(/No route to host/);
      expect(await listEgressRules(plain.runtime.instanceId)).not.toBeNull();
    } finally {
      await endAllSessions(plain).catch(() => undefined);
      await plain.stop();
    }
    expect(await listEgressRules(plain.runtime.instanceId)).toBeNull();
  });

  it('a host that cannot set them refuses to start, saying why and how to opt out', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'essh-egress-'));
    const noPrograms = await mkdtemp(path.join(os.tmpdir(), 'essh-egress-path-'));
    const searchPath = process.env.PATH;
    process.env.PATH = noPrograms; // the runtime's nft is looked up here: none
    try {
      const config = loadConfig({
        ...process.env, ESSH_DATA_DIR: dataDir, TEMPORAL_ADDRESS: stack.config.temporal.address, TEMPORAL_NAMESPACE: stack.namespace,
        ESSH_INSTALLATION: `eg${suffix}`, ESSH_API_PORT: '0', ESSH_METRICS_PORT: '0', ESSH_LOG_LEVEL: 'silent',
      });
      await expect(startRuntime(config, { hostStacks: ['local'] })).rejects.toThrow(
        /cannot set the egress rules of session containers: the nft program is missing \(Debian package nftables.*ESSH_EGRESS_ENFORCE=0/,
      );
    } finally {
      process.env.PATH = searchPath;
      await rm(dataDir, { recursive: true, force: true });
      await rm(noPrograms, { recursive: true, force: true });
    }
    // Nothing of it is left on the engine.
    expect((await docker.listNetworks({ filters: { name: [sessionNetworkName(`eg${suffix}`)] } }))).toEqual([]);
  });
});
