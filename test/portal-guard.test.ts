import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressSource, DEFAULT_PORTAL_LIMITS, PortalGuard } from '../portal/guard.js';
import { createTenant, sleep, useTestStack, waitFor } from './support/harness.js';
import { generateKey, registerKey } from './support/portal-terminal.js';

/**
 * The portal's share of itself (docs/threat-model.md, issue 18): slots for authenticating connections
 * shared fairly between sources, idle authenticated connections closed, a cap per user, credentials
 * checked again before each new channel, and keys offered without a signature counted and answered
 * alike. Real portal, real OpenSSH and ssh2 clients, from loopback addresses of their own.
 */

const run = promisify(execFile);
const IDLE_S = 20;
const PER_USER = 3;
const TOKEN_TTL_S = 12;

const stack = useTestStack({
  env: {
    ESSH_PORTAL_IDLE_TIMEOUT_S: String(IDLE_S),
    ESSH_PORTAL_MAX_CONNECTIONS_PER_USER: String(PER_USER),
    ESSH_SESSION_TOKEN_TTL_S: String(TOKEN_TTL_S),
    // Early drop off, so that 50 sources can fill every slot: then only the eviction lets a newcomer
    // in (the early drop itself is checked on the guard below).
    ESSH_PORTAL_MAX_STARTUPS: '200:30:200',
  },
});
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-guard-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

type Tenant = Awaited<ReturnType<typeof createTenant>>;

/** A new ed25519 key registered to the tenant's user: its file, its id, and OpenSSH's arguments for it. */
async function registeredKey(t: Tenant, name: string) {
  const { keyFile: file } = await generateKey(dir, name);
  // The operator registers it, holding the key it made.
  const key = await registerKey(stack, stack.adminToken, t.user.id, file);
  return { file, id: key.id, args: sshArgs(file) };
}

function sshArgs(keyFile: string): string[] {
  return [
    '-p', String(stack.runtime.sshPort), '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes',
  ];
}

const ssh = (args: string[]) =>
  run('ssh', args).then((r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }), (e) => ({ code: e.code as number, stdout: String(e.stdout), stderr: String(e.stderr) }));

/** An ssh2 client logged in; resolves once ready. */
function connect(opts: ssh2.ConnectConfig & { from?: string }): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.once('ready', () => resolve(c));
    c.once('error', reject);
    c.connect({
      ...opts,
      sock: net.connect({ host: '127.0.0.1', port: stack.runtime.sshPort!, ...(opts.from ? { localAddress: opts.from } : {}) }),
      readyTimeout: 30_000,
    });
  });
}

const closed = (c: ssh2.Client) => new Promise<void>((r) => c.once('close', () => r()));

/** What the portal answers to one command on an open connection: exit code and what it printed. */
function execOn(c: ssh2.Client, command: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    c.exec(command, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let code = -1;
      ch.on('data', (d: Buffer) => (out += d.toString()));
      ch.stderr.on('data', (d: Buffer) => (out += d.toString()));
      ch.on('exit', (n: number) => (code = n));
      ch.on('close', () => resolve({ code, out }));
    });
  });
}

/**
 * A client that offers public keys and never signs: each offer is a key sent without a signature, and
 * `answeredYes` counts those the portal answered "would do" (ssh2 asks the agent to sign only then).
 */
class OfferOnlyAgent extends ssh2.BaseAgent {
  answeredYes = 0;
  constructor(private readonly keys: ssh2.ParsedKey[]) {
    super();
  }
  getIdentities(cb: (err: Error | undefined, keys?: ssh2.ParsedKey[]) => void) {
    cb(undefined, this.keys);
  }
  sign(_key: ssh2.ParsedKey, _data: Buffer, _opts: unknown, cb?: (err: Error | undefined, signature?: Buffer) => void) {
    this.answeredYes++;
    cb?.(new Error('this client only offers keys'));
  }
}

/** Offers `keys` (again and again, up to `rounds` times) as `username` until the portal closes the connection. */
function offerKeys(username: string, keys: ssh2.ParsedKey[], from: string, rounds = 1): Promise<{ answeredYes: number; loggedIn: boolean }> {
  const agent = new OfferOnlyAgent(keys);
  return new Promise((resolve) => {
    const c = new ssh2.Client();
    let loggedIn = false;
    let round = 0;
    c.on('ready', () => {
      loggedIn = true;
      c.end();
    });
    c.on('error', () => undefined);
    c.on('close', () => resolve({ answeredYes: agent.answeredYes, loggedIn }));
    const sock = net.connect({ host: '127.0.0.1', port: stack.runtime.sshPort!, localAddress: from });
    sock.on('error', () => undefined);
    c.connect({
      sock, username, agent, readyTimeout: 30_000,
      authHandler: (_methods: unknown, _partial: unknown, next: (m: unknown) => void) => {
        if (round++ >= rounds) return next(false);
        next({ type: 'agent', username, agent });
      },
    } as ssh2.ConnectConfig);
  });
}

async function publicKeyOf(file: string): Promise<ssh2.ParsedKey> {
  const key = ssh2.utils.parseKey(await readFile(`${file}.pub`, 'utf8'));
  if (key instanceof Error || Array.isArray(key)) throw new Error(`could not parse ${file}.pub`);
  return key;
}

describe('the guard\'s arithmetic', () => {
  it('keys IPv6 limits on the /64 and IPv4 (mapped or not) on the address', () => {
    expect(addressSource('fd00:1:2:3:aaaa:bbbb:cccc:dddd')).toBe('fd00:1:2:3::/64');
    expect(addressSource('fd00:1:2:3::9')).toBe(addressSource('FD00:1:2:3:ffff::1'));
    expect(addressSource('fd00:1:2:4::9')).not.toBe(addressSource('fd00:1:2:3::9'));
    expect(addressSource('::1')).toBe('0:0:0:0::/64');
    expect(addressSource('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressSource('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressSource('10.1.2.3')).toBe('10.1.2.3');
  });

  it('one /64 holds at most its 10 authenticating slots, however many addresses it uses', () => {
    const guard = new PortalGuard(DEFAULT_PORTAL_LIMITS);
    let admitted = 0;
    for (let i = 1; i <= 200; i++) if (guard.admit(`2001:db8:0:7::${i.toString(16)}`, () => undefined)) admitted++;
    expect(admitted).toBe(10);
    expect(guard.refusals.authenticating_per_address).toBe(190);
    expect(guard.admit('2001:db8:0:8::1', () => undefined)).not.toBeNull();
  });

  it('past `start`, drops newcomers from sources already authenticating with sshd\'s rising probability, never one from a fresh source', () => {
    // A random source that always draws 0.5: dropped once the probability passes one half.
    const guard = new PortalGuard({ ...DEFAULT_PORTAL_LIMITS, earlyDropStart: 10, earlyDropRate: 30, maxUnauthenticated: 50, maxUnauthenticatedPerAddress: 50 }, () => 0.5);
    for (let i = 0; i < 10; i++) expect(guard.admit('10.0.0.1', () => undefined)).not.toBeNull();
    // 10 of 50: 30 %, under the draw: admitted; up to the point where 30 % + 70 % × (n-10)/40 passes 50 %.
    const before = Array.from({ length: 20 }, () => guard.admit('10.0.0.1', () => undefined) !== null);
    expect(before.filter(Boolean).length).toBe(12);
    expect(guard.refusals.early_drop).toBe(8);
    // A source with no slot yet is let in at any fill below full.
    for (let i = 2; i < 20; i++) expect(guard.admit(`10.0.0.${i}`, () => undefined)).not.toBeNull();
  });
});

describe('the portal\'s fair share', () => {
  it('50 addresses holding every authenticating slot do not keep a user out: a fresh address takes the oldest slot of the biggest holder', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const key = await registeredKey(t, 'fair_key');
    const portal = stack.runtime.portal!;
    const evictedBefore = portal.figures().refused.evicted;
    const held: net.Socket[] = [];
    let stopped = false;
    // Each of 50 addresses keeps 10 connections that say hello and nothing more, reconnecting when dropped.
    const hold = (from: string) => {
      if (stopped) return;
      const s = net.connect({ host: '127.0.0.1', port: stack.runtime.sshPort!, localAddress: from });
      s.on('connect', () => s.write('SSH-2.0-holder\r\n'));
      s.on('error', () => undefined);
      // One the portal let in (it said hello) comes back when dropped; one turned away gives up.
      let admitted = false;
      s.once('data', () => (admitted = true));
      s.on('close', () => admitted && setTimeout(() => hold(from), 500));
      held.push(s);
    };
    try {
      for (let round = 0; round < 10; round++) for (let a = 1; a <= 50; a++) hold(`127.0.3.${a}`);
      await waitFor('the 50 addresses to hold every authenticating slot', async () => portal.figures().unauthenticated >= 200, 30_000, 100);
      // A user from an address of its own, with OpenSSH.
      const r = await ssh([...key.args, '-o', 'BindAddress=127.0.4.1', `${t.app}@127.0.0.1`, 'echo in']);
      expect(r, r.stderr).toMatchObject({ code: 0, stdout: 'in\n' });
      expect(portal.figures().refused.evicted).toBeGreaterThan(evictedBefore);
      // The holders still hold all they may: the slots stay full, each address with its share.
      expect(portal.figures().refused.authenticating).toBeGreaterThan(0);
    } finally {
      stopped = true;
      for (const s of held) s.destroy();
    }
  }, 120_000);
});

describe('authenticated connections', () => {
  it('one with no channel open is closed after the idle timeout; one with a channel open stays, until its channel ends', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const key = await registeredKey(t, 'idle_key');
    const privateKey = await readFile(key.file);
    const busy = await connect({ username: t.app, privateKey });
    const busyClosed = closed(busy);
    let busyGone = false;
    void busyClosed.then(() => (busyGone = true));
    // The busy connection runs a session that outlasts the idle timeout.
    const long = execOn(busy, `sleep ${IDLE_S + 15}; echo done`);
    await waitFor('the busy connection\'s session', async () => stack.runtime.portal!.attachmentStats().length > 0, 60_000);
    const idle = await connect({ username: t.app, privateKey });
    await closed(idle); // by the portal: this test never ends it
    expect(busyGone).toBe(false);
    expect(await long).toEqual({ code: 0, out: 'done\n' });
    // Its session over, the busy connection is idle in turn, and closed by the portal too.
    await busyClosed;
  }, 120_000);

  it(`a user's idle connections past ${PER_USER}: the longest idle is closed; connections running a session do not count`, async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const key = await registeredKey(t, 'cap_key');
    const privateKey = await readFile(key.file);
    // More sessions at once than the cap, each on its own connection: the plan bounds those, not the cap.
    const running = await Promise.all(Array.from({ length: PER_USER + 1 }, () => ssh([...key.args, `${t.app}@127.0.0.1`, 'sleep 2; echo in'])));
    for (const r of running) expect(r, r.stderr).toMatchObject({ code: 0, stdout: 'in\n' });
    // Idle ones (authenticated, no channel: a ControlMaster left behind) are capped, the longest idle closed first.
    const idle: ssh2.Client[] = [];
    for (let i = 0; i < PER_USER; i++) idle.push(await connect({ username: t.app, privateKey }));
    const gone = idle.map(() => false);
    idle.forEach((c, i) => void closed(c).then(() => (gone[i] = true)));
    const newest = await connect({ username: t.app, privateKey });
    await closed(idle[0]!); // by the portal: this test never ends it
    await sleep(1000);
    expect(gone).toEqual([true, ...Array.from({ length: PER_USER - 1 }, () => false)]);
    // Another user is not affected.
    const other = await createTenant(stack, { plan: 'growth' });
    const otherKey = await registeredKey(other, 'cap_other_key');
    expect(await ssh([...otherKey.args, `${other.app}@127.0.0.1`, 'echo in'])).toMatchObject({ code: 0, stdout: 'in\n' });
    for (const c of [...idle, newest]) c.end();
  }, 120_000);
});

describe('credentials checked again on each new channel', () => {
  it('a key deleted while an OpenSSH ControlMaster connection is open: a new `ssh -S` session on it is refused', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const key = await registeredKey(t, 'mux_key');
    const control = path.join(dir, 'mux.sock');
    const base = [...key.args, '-o', `ControlPath=${control}`];
    const master = spawn('ssh', [...base, '-o', 'ControlMaster=yes', '-N', `${t.app}@127.0.0.1`], { stdio: 'ignore' });
    try {
      await waitFor('the control socket', async () => (await ssh([...base, '-O', 'check', `${t.app}@127.0.0.1`])).code === 0, 15_000, 200);
      const before = await ssh([...base, '-o', 'ControlMaster=no', `${t.app}@127.0.0.1`, 'echo before']);
      expect(before, before.stderr).toMatchObject({ code: 0, stdout: 'before\n' });
      expect((await stack.api.request('DELETE', `/users/${t.user.id}/ssh_keys/${key.id}`, stack.adminToken)).status).toBe(204);
      const after = await ssh([...base, '-o', 'ControlMaster=no', `${t.app}@127.0.0.1`, 'echo after']);
      expect(after.code).toBe(1);
      expect(after.stdout).toBe('');
      expect(after.stderr).toMatch(/the SSH key this connection logged in with \(SHA256:[^)]+\) has been removed/);
    } finally {
      master.kill('SIGTERM');
    }
  }, 120_000);

  it('a session token that has expired: a new channel on the connection it opened is refused', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const created = await stack.api.post(`/apps/${t.app}/sessions`, t.token, {});
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const { user, token, token_expires_at: expiresAt } = created.body.connect as { user: string; token: string; token_expires_at: string };
    const c = await connect({ username: user, password: token });
    try {
      // While the token stands, a channel reaches the session (which answers that it takes no command).
      const before = await execOn(c, 'true');
      expect(before.out).toMatch(/runs the command it was created with/);
      await sleep(Math.max(0, Date.parse(expiresAt) - Date.now()) + 500);
      const after = await execOn(c, 'true');
      expect(after.code).toBe(1);
      expect(after.out).toMatch(/the session token this connection logged in with has expired or was revoked/);
    } finally {
      c.end();
      await stack.api.post(`/sessions/${created.body.id}/terminate`, t.token, {});
    }
  }, 120_000);
});

describe('keys offered without a signature', () => {
  it('are answered alike whoever owns the key, and only the signed attempt decides', async () => {
    const owner = await createTenant(stack, { plan: 'growth' });
    const ownerKey = await registeredKey(owner, 'offer_owner_key');
    const created = await stack.api.post(`/apps/${owner.app}/sessions`, owner.token, {});
    expect(created.status).toBe(201);
    const stranger = path.join(dir, 'offer_stranger_key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger]);
    try {
      const user = `session-${created.body.id}`;
      const owned = await offerKeys(user, [await publicKeyOf(ownerKey.file)], '127.0.6.1');
      const notOwned = await offerKeys(user, [await publicKeyOf(stranger)], '127.0.6.2');
      const noSuchSession = await offerKeys('session-999999999', [await publicKeyOf(ownerKey.file)], '127.0.6.3');
      expect([owned, notOwned, noSuchSession]).toEqual([
        { answeredYes: 1, loggedIn: false }, { answeredYes: 1, loggedIn: false }, { answeredYes: 1, loggedIn: false },
      ]);
      // Signed, the owner's key logs in and the stranger's does not.
      const signed = await connect({ username: owner.app, privateKey: await readFile(ownerKey.file) });
      signed.end();
      await expect(connect({ username: owner.app, privateKey: await readFile(stranger) })).rejects.toThrow(/authentication methods failed/);
    } finally {
      await stack.api.post(`/sessions/${created.body.id}/terminate`, owner.token, {});
    }
  }, 120_000);

  it('count as attempts: a connection gets 6, and an address that keeps offering is shut out', async () => {
    const t = await createTenant(stack, { plan: 'growth' });
    const key = await registeredKey(t, 'probe_key');
    const publicKey = await publicKeyOf(key.file);
    const from = '127.0.7.1';
    // One connection offering the same key again and again: the portal closes it after 6 offers.
    const first = await offerKeys(t.app, [publicKey], from, 50);
    expect(first).toEqual({ answeredYes: 6, loggedIn: false });
    // 20 offers a minute from one address, and the address is shut out: even its owner's signed key.
    const blockedBefore = stack.runtime.portal!.figures().refused.blocked_address;
    await waitFor('the address to be shut out', async () => (await offerKeys(t.app, [publicKey], from, 50)).answeredYes === 0, 30_000, 0);
    const own = await ssh([...key.args, '-o', `BindAddress=${from}`, `${t.app}@127.0.0.1`, 'echo in']);
    expect(own.code).toBe(255);
    expect(stack.runtime.portal!.figures().refused.blocked_address).toBeGreaterThan(blockedBefore);
    // Another address is not; and there a key offered before a signed login costs nothing (ssh2 offers
    // before it signs, as OpenSSH does): more logins than the failure budget, all in.
    const privateKey = await readFile(key.file);
    for (let i = 0; i < 25; i++) (await connect({ username: t.app, privateKey, from: '127.0.7.2' })).end();
  }, 180_000);
});

