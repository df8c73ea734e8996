// `ssh -L` through the portal, with real OpenSSH: the TCP connection leaves from inside the session's
// container (the target sees the container's address), under the egress policy of the session
// network, refused when the account's operator turned forwarding off, `-R` refused, and each forward
// a `port_forward` event on the account's drain and a marker in the recording, without its bytes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { sessionNetworkName } from '../lib/networks.js';
import { addHttpsDrain, eventsOf, useHttpsReceiver } from './support/drains-receivers.js';
import { createTenant, docker, endAllSessions, sessionContainer, waitFor, waitForState, useTestStack } from './support/harness.js';
import { generateKey, keyOnly, registerKey, runToEnd, sshArgs } from './support/portal-terminal.js';

const stack = useTestStack();
const rx = useHttpsReceiver();
const suffix = randomBytes(3).toString('hex');
/** The app's own network (an operator's choice, as an app's database would sit on). */
const appNetwork = `essh-pf-test-${suffix}`;
let dir: string;
let listener: net.Server;
let listenerPort = 0;
let gateway = '';
const sshProcesses: ChildProcess[] = [];

/** Resolves once something listens on the local port (it is taken): a connection would be a forward of its own. */
function untilListening(port: number, exited: () => string | null): Promise<boolean> {
  return waitFor(`a listener on ${port}`, () => new Promise<boolean>((resolve) => {
    const gone = exited();
    if (gone !== null) throw new Error(gone);
    const probe = net.createServer();
    probe.once('error', () => resolve(true));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
  }), 30_000, 100);
}

/**
 * The target: on the host, at the app network's gateway, it greets each connection with the address it
 * came from, echoes what it gets, and on the client's half-close says how many bytes it got and closes.
 */
function startTarget(host: string): Promise<void> {
  listener = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = 0;
    s.write(`peer ${s.remoteAddress}\n`);
    s.on('data', (c: Buffer) => {
      got += c.length;
      s.write(`echo ${c.toString()}`);
    });
    s.on('end', () => s.end(`bye ${got}\n`));
    s.on('error', () => undefined);
  });
  return new Promise((resolve, reject) => listener.listen(0, host, () => resolve()).once('error', reject));
}

/** `ssh -N` with the owner's key, its forwards given in `forward`; resolves once it has logged in and listens. */
async function sshForward(user: string, keyFile: string, forward: string[], localPorts: number[]): Promise<{ child: ChildProcess; stderr: () => string }> {
  // INFO: OpenSSH says a refused channel ("open failed: …") at that level.
  const args = sshArgs(stack.runtime.portal!.port, keyOnly(keyFile)).map((a) => (a === 'LogLevel=ERROR' ? 'LogLevel=INFO' : a));
  const child = spawn('ssh', ['-N', ...args, '-o', 'ExitOnForwardFailure=yes', ...forward, `${user}@127.0.0.1`], { stdio: ['ignore', 'ignore', 'pipe'] });
  sshProcesses.push(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  for (const port of localPorts) await untilListening(port, () => (child.exitCode !== null ? `ssh exited (${child.exitCode}): ${stderr}` : null));
  return { child, stderr: () => stderr };
}

/** Connects to a local forward, sends `send` then half-closes, and resolves with all it got until the far end closed. */
function exchange(port: number, send: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => undefined);
    s.on('data', (c: Buffer) => {
      got += c.toString();
      // After the greeting: what we send, then our half-close.
      if (got.includes('\n') && !s.writableEnded) s.end(send);
    });
    s.on('end', () => resolve(got));
    s.on('error', reject);
    setTimeout(() => (s.destroy(), reject(new Error(`no end from the forward on ${port}; got ${JSON.stringify(got)}`))), 20_000).unref();
  });
}

const freePort = () => new Promise<number>((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as AddressInfo;
    s.close(() => resolve(port));
  });
});

/** A session of the tenant's app waiting for its client, its owner's key registered. */
async function waitingSession(t: Awaited<ReturnType<typeof createTenant>>) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await waitForState(stack, t.token, r.body.id, 'waiting_for_client', 60_000);
  return r.body.id as number;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-pf-'));
  const network = await docker.createNetwork({ Name: appNetwork, Driver: 'bridge', Labels: { 'essh.test': 'port-forward' } });
  gateway = (await network.inspect()).IPAM?.Config?.[0]?.Gateway ?? '';
  expect(gateway).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  await startTarget(gateway);
  listenerPort = (listener.address() as AddressInfo).port;
}, 60_000);

afterAll(async () => {
  for (const c of sshProcesses) c.kill();
  await endAllSessions(stack).catch(() => undefined);
  // The sessions' containers leave the network as their teardown removes them, a moment after they
  // end; a network left behind would hold one of the engine's few dozen address ranges.
  await waitFor(`the test network ${appNetwork} removed`, () => docker.getNetwork(appNetwork).remove().then(() => true, (err: { statusCode?: number }) => err.statusCode === 404), 60_000, 500)
    .catch(() => undefined);
  await new Promise((r) => (listener ? listener.close(r) : r(undefined)));
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('ssh -L through the portal', () => {
  it('connects from inside the session container, both ways with half-closes; a drain event and a recording marker say target and bytes, never the bytes', async () => {
    const t = await createTenant(stack);
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { network: appNetwork })).status).toBe(200);
    const d = await addHttpsDrain(stack, rx, t.account, 'pf', '/pf');
    const key = await generateKey(dir, 'owner');
    await registerKey(stack, t.token, t.user.id, key.keyFile);
    const id = await waitingSession(t);
    const inspected = await docker.getContainer(sessionContainer(stack, id)).inspect();
    const containerIp = inspected.NetworkSettings.Networks[appNetwork]?.IPAddress;
    expect(containerIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    const local = await freePort();
    const ssh = await sshForward(`session-${id}`, key.keyFile, ['-L', `127.0.0.1:${local}:${gateway}:${listenerPort}`], [local]);
    const secret = 'not-for-the-journal-' + randomBytes(4).toString('hex');
    const got = await exchange(local, secret);
    // The target saw the session container's address on the app's network: the connection left from there.
    expect(got).toBe(`peer ${containerIp}\necho ${secret}bye ${secret.length}\n`);

    // The SSH connection goes while the target keeps its side open: the relay does not stay behind.
    const sticky = net.createServer({ allowHalfOpen: true }, (s) => {
      s.write('hold\n');
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => sticky.listen(0, gateway, r));
    const stickyLocal = await freePort();
    const holder = await sshForward(`session-${id}`, key.keyFile, ['-L', `127.0.0.1:${stickyLocal}:${gateway}:${(sticky.address() as AddressInfo).port}`], [stickyLocal]);
    const relays = async () => ((await docker.getContainer(sessionContainer(stack, id)).top()).Processes ?? []).filter((p: string[]) => p.join(' ').includes('/.essh/relay')).length;
    const client = net.connect(stickyLocal, '127.0.0.1');
    await new Promise((resolve) => client.once('data', resolve));
    expect(await relays()).toBe(1);
    holder.child.kill();
    await waitFor('the relay to go once its SSH connection closed', async () => (await relays()) === 0, 15_000, 200);
    client.destroy();
    sticky.close();
    ssh.child.kill();

    expect((await stack.api.post(`/sessions/${id}/terminate`, t.token, { reason: 'port-forward test' })).status).toBe(202);
    await waitForState(stack, t.token, id, 'ended', 60_000);
    const event = await waitFor('the port_forward event', async () =>
      eventsOf(rx).find((e) => e.operation_id === id && e.event === 'port_forward'), 30_000, 200);
    expect(event).toMatchObject({
      stream: 'lifecycle', app: t.app, account: t.account, operation_user_email: t.user.email, forwarded_by: t.user.email,
      target_host: gateway, target_port: listenerPort, connected: true,
      bytes_to_target: secret.length, bytes_from_target: got.length,
    });
    expect(event.duration_s).toBeGreaterThanOrEqual(0);
    expect(event.log).toContain(`forwarded a port to ${gateway}:${listenerPort}`);
    expect(JSON.stringify(eventsOf(rx))).not.toContain(secret);
    const rec = await stack.api.get(`/sessions/${id}/recording`, t.token);
    expect(rec.status).toBe(200);
    const marker = String(rec.body).split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((e) => Array.isArray(e) && e[1] === 'm');
    expect(marker?.[2]).toContain(`forwarded a port to ${gateway}:${listenerPort}: ${secret.length} bytes sent, ${got.length} received`);
    expect(String(rec.body)).not.toContain(secret);
  }, 120_000);

  it('obeys the session network\'s egress policy (the host\'s own address is refused), refuses -R, and refuses with its reason when the operator turned forwarding off', async () => {
    const t = await createTenant(stack);
    const key = await generateKey(dir, 'second');
    await registerKey(stack, t.token, t.user.id, key.keyFile);
    const id = await waitingSession(t);
    // The session network's gateway is the host itself: the egress rules refuse every host address.
    const sessionGateway = (await docker.getNetwork(sessionNetworkName(stack.runtime.instanceId)).inspect()).IPAM?.Config?.[0]?.Gateway;
    const hostTarget = net.createServer((s) => s.end('reached the host\n'));
    await new Promise<void>((r) => hostTarget.listen(0, '0.0.0.0', r));
    try {
      const hostPort = (hostTarget.address() as AddressInfo).port;
      const local = await freePort();
      const ssh = await sshForward(`session-${id}`, key.keyFile, ['-L', `127.0.0.1:${local}:${sessionGateway}:${hostPort}`], [local]);
      const got = await new Promise<string>((resolve) => {
        let text = '';
        const s = net.connect(local, '127.0.0.1');
        s.on('data', (c: Buffer) => (text += c.toString()));
        s.on('close', () => resolve(text));
        s.on('error', () => undefined);
      });
      expect(got).toBe('');
      await waitFor('ssh to say the channel failed', async () => /open failed/.test(ssh.stderr()), 15_000, 100);
      expect(ssh.stderr()).toMatch(new RegExp(`open failed: connect failed: ${sessionGateway!.replace(/\./g, '\\.')}:${hostPort}: No route to host`));
      ssh.child.kill();

      // -R: the portal has no remote forwarding.
      const r = await runToEnd('ssh', ['-N', ...sshArgs(stack.runtime.portal!.port, keyOnly(key.keyFile)), '-o', 'ExitOnForwardFailure=yes',
        '-R', `127.0.0.1:0:127.0.0.1:${hostPort}`, `session-${id}@127.0.0.1`], { timeoutMs: 20_000 });
      expect(r.code).toBe(255);
      expect(r.stderr).toMatch(/remote port forwarding failed/);

      // The operator turns forwarding off for the account: the client is told why.
      const patched = await stack.api.request('PATCH', `/accounts/${t.account}`, stack.adminToken, { port_forwarding: false });
      expect(patched.status, JSON.stringify(patched.body)).toBe(200);
      expect(patched.body.port_forwarding).toBe(false);
      expect((await stack.api.request('PATCH', `/accounts/${t.account}`, t.token, { port_forwarding: true })).status).toBe(403);
      const off = await freePort();
      const refused = await sshForward(`session-${id}`, key.keyFile, ['-L', `127.0.0.1:${off}:${gateway}:${listenerPort}`], [off]);
      net.connect(off, '127.0.0.1').on('error', () => undefined);
      await waitFor('ssh to print the refusal', async () => /open failed/.test(refused.stderr()), 15_000, 100);
      expect(refused.stderr()).toContain(`open failed: administratively prohibited: essh: port forwarding is turned off for account ${t.account} by its operator`);
      refused.child.kill();
    } finally {
      await new Promise((r) => hostTarget.close(r));
    }
  }, 120_000);

  it('essh ssh -L forwards a local port through the session\'s container while the session lasts', async () => {
    const t = await createTenant(stack);
    expect((await stack.api.request('PATCH', `/apps/${t.app}`, stack.adminToken, { network: appNetwork })).status).toBe(200);
    const local = await freePort();
    const cli = spawn(process.execPath, [path.join(projectRoot, 'bin', 'essh.js'), 'ssh', '-T', t.app, '-L', `${local}:${gateway}:${listenerPort}`, '--', 'sh', '-c', 'read line'], {
      env: { ...process.env, ESSH_CONFIG: path.join(dir, 'no-config.json'), ESSH_API_URL: stack.url, ESSH_TOKEN: t.token }, stdio: ['pipe', 'pipe', 'pipe'],
    });
    sshProcesses.push(cli);
    let stderr = '';
    cli.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => cli.once('exit', r));
    await untilListening(local, () => (cli.exitCode !== null ? `essh exited (${cli.exitCode}): ${stderr}` : null));
    const got = await exchange(local, 'via-cli').catch((err: Error) => {
      throw new Error(`${err.message}; essh said: ${stderr}`);
    });
    expect(got).toMatch(new RegExp(`^peer (\\d+\\.){3}\\d+\necho via-clibye 7\n$`));
    expect(got).not.toContain(`peer ${gateway}\n`);
    cli.stdin!.end('done\n');
    expect(await exited, stderr).toBe(0);
  }, 120_000);
});
