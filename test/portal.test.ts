// The SSH portal against the real OpenSSH client (in a real terminal where a TTY matters), real
// Temporal and the real Docker engine.
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import ssh2 from 'ssh2';
import { loadOrCreateHostKey } from '../lib/ssh-host-key.js';
import Docker from 'dockerode';
import { openPortalShell } from '../cli/portal-client.js';
import { SshPortal } from '../portal/server.js';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  containerExists, createTenant, docker, useTestStack, waitFor, waitForState, workflowBundle,
} from './support/harness.js';
import { sessionContainer } from './support/harness.js';
import {
  Terminal, findDescendant, generateKey, keyOnly, passwordOnly, q, registerKey, run, runToEnd, sshArgs, writeSecretFile,
} from './support/portal-terminal.js';

/** The demo image's shell prompt. */
const PROMPT = /:\/app[$#] $/m;
const stack = useTestStack({
  env: { ESSH_PORTAL_HEARTBEAT_S: '1' },
  // `short`: a second stack with an 8 s maximum session duration, served by this same process.
  parts: { api: true, worker: true, hostStacks: ['local', 'short'], workflowBundle: workflowBundle(), portal: true },
});
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let port: number;
const terminals: Terminal[] = [];

beforeAll(async () => {
  port = stack.runtime.sshPort!;
  tenant = await createTenant(stack, { plan: 'scale' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-portal-test-'));
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function createSession(body: object = {}, t = tenant) {
  const r = await stack.api.post(`/apps/${t.app}/sessions`, t.token, body);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as {
    id: number;
    connect: { host: string; port: number; user: string; token: string; ssh_command: string; host_key: string; host_key_fingerprint: string };
  };
}

/** OpenSSH in a tmux pane, password from a file through sshpass. */
async function sshInTerminal(user: string, token: string, opts: { cols?: number; rows?: number } = {}) {
  const tokenFile = await writeSecretFile(dir, `token-${user}`, token);
  const cmd = ['sshpass', '-f', tokenFile, 'ssh', '-tt', ...sshArgs(port, passwordOnly), `${user}@127.0.0.1`].map(q).join(' ');
  const t = await Terminal.start(cmd, opts);
  terminals.push(t);
  return t;
}

async function recordingOf(id: number) {
  const r = await stack.api.get(`/sessions/${id}/recording`, tenant.token);
  expect(r.status).toBe(200);
  const [first, ...rest] = String(r.body).trimEnd().split('\n');
  return { header: JSON.parse(first!) as { width: number; height: number }, events: rest.map((l) => JSON.parse(l) as [number, string, string]) };
}

async function newRegisteredKey(t: { user: { id: number }; token: string }, name: string) {
  const key = await generateKey(dir, name);
  await registerKey(stack, t.token, t.user.id, key.keyFile);
  return key;
}

describe('OpenSSH in a real terminal, with the session token as password', () => {
  it('types a command and reads its output, follows resizes, and exits with the shell status', async () => {
    const s = await createSession();
    expect(s.connect).toMatchObject({ host: '127.0.0.1', port, user: `session-${s.id}` });
    expect(s.connect.ssh_command).toBe(`ssh -t -p ${port} session-${s.id}@127.0.0.1`);
    const term = await sshInTerminal(s.connect.user, s.connect.token, { cols: 100, rows: 30 });
    await term.waitForText(PROMPT);
    await waitForState(stack, tenant.token, s.id, 'active', 10_000);

    await term.typeLine('echo "sum=$((6*7))"; echo "$APP_ENV"');
    await term.waitForText(/^sum=42\s*\ntest\s*$/m);

    await term.typeLine('stty size');
    await term.waitForText(/^30 100\s*$/m);
    await term.resizeAndWaitForStty(120, 40);

    // Ctrl-C reaches the program in the container (the TTY's line discipline turns it into SIGINT).
    await term.typeLine('sleep 30; echo after-sleep');
    await sleep(500);
    await term.keys('C-c');
    await term.typeLine('echo interrupted-ok');
    await term.waitForText(/^interrupted-ok\s*$/m, 15_000);
    expect(await term.screen()).not.toMatch(/^after-sleep/m);

    // Ctrl-D ends `cat`'s input; the shell carries on.
    await term.typeLine('cat > /tmp/typed');
    // Typed ahead while the shell's line editor still held the terminal in raw mode, the line would
    // reach `cat` unechoed and Ctrl-D as a plain byte: the keys go once `cat` runs.
    await waitFor('cat to be reading the terminal', async () =>
      (await docker.getContainer(sessionContainer(stack, s.id)).top()).Processes.some((p: string[]) => p[p.length - 1] === 'cat'), 10_000, 50);
    await term.typeLine('typed-line');
    await term.keys('C-d');
    await term.typeLine('echo "got:$(cat /tmp/typed)"');
    await term.waitForText(/^got:typed-line\s*$/m, 15_000);

    // Ctrl-P Ctrl-Q (Docker's default detach keys) reach the program instead of detaching.
    // The keys go only once the shell has run `stty -ixon`: before that the terminal would take
    // Ctrl-Q as flow control.
    await term.typeLine('stty -ixon; echo ixon-off; head -c 3 | od -An -tx1');
    await term.waitForText(/^ixon-off\s*$/m, 15_000);
    await term.keys('C-p', 'C-q', 'Enter');
    await term.waitForText(/^\s*10 11 0a\s*$/m, 15_000);

    await term.typeLine('exit 7');
    expect(await term.exitStatus()).toBe(7);
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended).toMatchObject({ end_reason: 'exit', exit_code: 7 });
    expect(await containerExists(sessionContainer(stack, s.id))).toBe(false);

    // The recording replays at the sizes the terminal had: the program started when the client
    // attached, in its 100×30 terminal; then 120×40 from the resize on.
    const { header, events } = await recordingOf(s.id);
    expect(header).toMatchObject({ width: 100, height: 30 });
    const resizes = events.filter((e) => e[1] === 'r').map((e) => e[2]);
    expect(resizes).not.toContain('100x30');
    expect(resizes.at(-1)).toBe('120x40');
    const resizedAt = events.findIndex((e) => e[1] === 'r' && e[2] === '120x40');
    const sttyAfter = events.findIndex((e) => e[1] === 'o' && e[2].includes('40 120'));
    expect(resizedAt).toBeGreaterThan(-1);
    expect(sttyAfter).toBeGreaterThan(resizedAt);
  });

  it('kill -9 of ssh ends the session with disconnect and removes the container within the heartbeat timeout + 5 s', async () => {
    const s = await createSession();
    const term = await sshInTerminal(s.connect.user, s.connect.token);
    await term.waitForText(PROMPT);
    await waitForState(stack, tenant.token, s.id, 'active', 10_000);
    const ssh = await findDescendant(await term.panePid(), 'ssh');
    expect(ssh).toBeDefined();
    const killedAt = Date.now();
    process.kill(ssh!, 'SIGKILL');
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', (stack.config.session.heartbeatTimeoutS + 5) * 1000);
    expect(ended.end_reason).toBe('disconnect');
    await waitFor('the container to be removed', async () => !(await containerExists(sessionContainer(stack, s.id))), killedAt + (stack.config.session.heartbeatTimeoutS + 5) * 1000 - Date.now());
  });

  it('an operator terminating the session shows one line saying why (its control characters escaped) and by whom, and closes', async () => {
    const s = await createSession();
    const term = await sshInTerminal(s.connect.user, s.connect.token, { cols: 160 }); // the notice on one line
    await term.waitForText(PROMPT);
    await waitForState(stack, tenant.token, s.id, 'active', 10_000);
    const me = await stack.api.get('/me', stack.adminToken);
    // A reason that, obeyed by the terminal, would clear the screen and retitle the window.
    const reason = 'maintenance\u001b]0;pwned\u0007\u001b[2J';
    const r = await stack.api.post(`/sessions/${s.id}/terminate`, stack.adminToken, { reason });
    expect(r.status).toBe(202);
    await term.waitForText(new RegExp(`^essh: session ${s.id} terminated by ${me.body.email.replace(/[.]/g, '\\.')}: maintenance\\\\x1b\\]0;pwned\\\\x07\\\\x1b\\[2J\\s*$`, 'm'));
    expect(await term.screen()).toMatch(PROMPT); // the screen was not cleared
    expect(await term.exitStatus()).not.toBe(0);
    const screen = await term.screen();
    expect(screen.match(/essh: session \d+ terminated/g)).toHaveLength(1);
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended).toMatchObject({ end_reason: 'terminated', ended_by: me.body.email, end_message: reason });
  });
});

describe('the host key', () => {
  it('is made once under the data dir (0600) and is the key the portal presents, also after a restart', async () => {
    const file = path.join(stack.dataDir, 'ssh_host_ed25519_key');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const { stdout: expected } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`]);
    const fingerprint = expected.split(/\s+/)[1]!;
    const presented = async (p: number) => {
      const { stdout: scanned } = await run('ssh-keyscan', ['-t', 'ed25519', '-p', String(p), '127.0.0.1']);
      const keyFile = await writeSecretFile(dir, `scanned-${p}`, scanned);
      return (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', keyFile])).stdout.split(/\s+/)[1];
    };
    expect(await presented(port)).toBe(fingerprint);
    const again = new SshPortal({
      config: { ...stack.config, ssh: { ...stack.config.ssh, port: 0 } }, db: stack.runtime.db, sessions: stack.runtime.sessions,
      client: stack.runtime.client, docker: new Docker(), log: stack.runtime.log,
    });
    await again.start();
    try {
      expect(await presented(again.port)).toBe(fingerprint);
    } finally {
      await again.stop();
    }
  });

  it('replaces a key file that ssh2 cannot read (one its own generator wrote), and never hands one out', async () => {
    const keyDir = await mkdtemp(path.join(dir, 'hostkey-'));
    // ssh2's generator sometimes writes a key it cannot read back: draw until one such comes.
    let unreadable: string;
    do unreadable = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'broken' }).private;
    while (!(ssh2.utils.parseKey(unreadable) instanceof Error));
    await writeFile(path.join(keyDir, 'ssh_host_ed25519_key'), unreadable, { mode: 0o600 });
    const key = await loadOrCreateHostKey(keyDir);
    expect(ssh2.utils.parseKey(key)).not.toBeInstanceOf(Error);
    expect(key.toString()).not.toBe(unreadable);
    expect(await loadOrCreateHostKey(keyDir)).toEqual(key);
    expect((await stat(path.join(keyDir, 'ssh_host_ed25519_key'))).mode & 0o777).toBe(0o600);
  });

  it('is announced in the connect block: OpenSSH trusting only that key gets in, and the essh client refuses any other key without spending the token', async () => {
    const file = path.join(stack.dataDir, 'ssh_host_ed25519_key.pub');
    const fingerprint = (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', file])).stdout.split(/\s+/)[1];
    const s = await createSession({ command: ['sh', '-c', 'echo via-announced-key'] });
    expect(s.connect.host_key_fingerprint).toBe(fingerprint);
    // known_hosts from the API's answer alone; OpenSSH takes the first value of an option, so these win.
    const knownHosts = await writeSecretFile(dir, 'known_hosts', `[127.0.0.1]:${port} ${s.connect.host_key}\n`);
    const strict = ['-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`];
    const r = await runToEnd('sshpass', ['-e', 'ssh', ...strict, ...sshArgs(port, passwordOnly), `${s.connect.user}@127.0.0.1`], {
      env: { ...process.env, SSHPASS: s.connect.token }, timeoutMs: 20_000,
    });
    expect(r.stdout.toString(), r.stderr).toBe('via-announced-key\n');
    expect(r.code).toBe(0);

    const t = await createSession({ command: ['sh', '-c', 'echo token-still-good'] });
    const impostor = await generateKey(dir, 'impostor-host-key');
    await expect(openPortalShell({ ...t.connect, host_key: impostor.publicKey }, { pty: null })).rejects.toThrow(
      /presented a host key other than the essh API announced .*not sending the session token/,
    );
    const shell = await openPortalShell(t.connect, { pty: null });
    let out = '';
    shell.channel.on('data', (c: Buffer) => (out += c.toString('utf8')));
    expect(await shell.exitCode).toBe(0);
    expect(out).toBe('token-still-good\n');
    shell.close();
  });
});

const kbdOnly = ['-o', 'PreferredAuthentications=keyboard-interactive', '-o', 'PubkeyAuthentication=no', '-o', 'NumberOfPasswordPrompts=1'];

describe('a session that expires while attached', () => {
  it('shows one line saying it expired, and the connection closes', async () => {
    const st = await stack.api.post('/stacks', stack.adminToken, { name: 'short', max_session_duration_s: 8, dedicated: true });
    expect(st.status, JSON.stringify(st.body)).toBe(201);
    const t = await createTenant(stack, { stackName: 'short', plan: 'growth' });
    const s = await createSession({}, t);
    await waitForState(stack, t.token, s.id, 'waiting_for_client');
    const term = await sshInTerminal(s.connect.user, s.connect.token);
    await term.waitForText(PROMPT);
    await term.waitForText(new RegExp(`^essh: session ${s.id} expired: the maximum session duration passed\\s*$`, 'm'), 20_000);
    expect(await term.exitStatus()).not.toBe(0);
    expect((await term.screen()).match(/essh: session \d+ expired/g)).toHaveLength(1);
    expect(await waitForState(stack, t.token, s.id, 'ended', 20_000)).toMatchObject({ end_reason: 'expired' });
  });
});

describe('keyboard-interactive', () => {
  it('takes the session token too', async () => {
    const s = await createSession({ command: ['sh', '-c', 'echo via-kbd; exit 6'] });
    const r = await runToEnd('sshpass', ['-e', 'ssh', '-T', ...sshArgs(port, kbdOnly), `${s.connect.user}@127.0.0.1`], {
      env: { ...process.env, SSHPASS: s.connect.token },
    });
    expect(r.stdout.toString()).toBe('via-kbd\n');
    expect(r.code).toBe(6);
  });
});

describe('refusals: nothing leaks', () => {
  const attempt = (user: string, extra: string[], password?: string, command: string[] = ['true']) =>
    runToEnd(password !== undefined ? 'sshpass' : 'ssh', [
      ...(password !== undefined ? ['-e', 'ssh'] : []), ...sshArgs(port, extra), `${user}@127.0.0.1`, ...command,
    ], { env: { ...process.env, SSHPASS: password ?? '' }, timeoutMs: 20_000 });

  it('a token works once, a wrong token, an unknown session, another user\'s key and a second client are all refused', async () => {
    const s = await createSession();
    const other = await createTenant(stack, { plan: 'scale' });
    const ownerKey = await newRegisteredKey(tenant, 'owner');
    const otherKey = await newRegisteredKey(other, 'other');

    // The first client, without a PTY: it holds the session while the others try.
    const tokenFile = await writeSecretFile(dir, 'first', s.connect.token);
    const first = spawn('sshpass', ['-f', tokenFile, 'ssh', '-T', ...sshArgs(port, passwordOnly), `${s.connect.user}@127.0.0.1`], { stdio: ['pipe', 'pipe', 'pipe'] });
    let firstOut = '';
    first.stdout.on('data', (c) => (firstOut += c));
    try {
      await waitForState(stack, tenant.token, s.id, 'active', 15_000);

      const reused = await attempt(s.connect.user, passwordOnly, s.connect.token);
      const reusedKbd = await attempt(s.connect.user, kbdOnly, s.connect.token);
      const wrong = await attempt(s.connect.user, passwordOnly, 'esst_not-the-token');
      const unknown = await attempt('session-999999999999', passwordOnly, s.connect.token);
      const othersKey = await attempt(s.connect.user, keyOnly(otherKey.keyFile));
      for (const r of [reused, reusedKbd, wrong, unknown, othersKey]) {
        expect(r.code).toBe(255);
        expect(r.stderr).toMatch(/Permission denied/);
        expect(r.stderr).not.toMatch(/session \d|not found|token|ended/i);
      }
      // The owner's own key gets in, but a session takes one client at a time: a clear message.
      const second = await attempt(s.connect.user, ['-T', ...keyOnly(ownerKey.keyFile)], undefined, []);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(new RegExp(`essh: session ${s.id} already has a client attached`));

      first.stdin.write('echo still-here\n');
      await waitFor('the first client to still work', async () => firstOut.includes('still-here'), 10_000);
      first.stdin.write('exit 0\n');
      await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    } finally {
      first.kill();
    }
    // Ended: the owner's key no longer gets in either.
    const afterEnd = await attempt(s.connect.user, keyOnly(ownerKey.keyFile));
    expect(afterEnd.code).toBe(255);
    expect(afterEnd.stderr).toMatch(/Permission denied/);
  });
});

describe('<app>@host with a registered key', () => {
  let key: { keyFile: string; publicKey: string };
  beforeAll(async () => {
    key = await newRegisteredKey(tenant, 'app-login');
  });

  it('runs a command without a PTY: separate stdout and stderr, and its exit status', async () => {
    const r = await runToEnd('ssh', [...sshArgs(port, keyOnly(key.keyFile)), `${tenant.app}@127.0.0.1`, 'echo out-$((1+1)); echo err >&2; exit 3']);
    expect(r.stdout.toString()).toBe('out-2\n');
    expect(r.stderr).toBe('err\n');
    expect(r.code).toBe(3);
    const list = await stack.api.get(`/sessions?app=${tenant.app}`, tenant.token);
    const s = list.body.items.find((x: any) => x.command?.[2]?.startsWith('echo out-'));
    expect(s).toMatchObject({ command: ['/bin/sh', '-c', 'echo out-$((1+1)); echo err >&2; exit 3'], user: { id: tenant.user.id } });
    const ended = await waitForState(stack, tenant.token, s.id, 'ended', 20_000);
    expect(ended).toMatchObject({ end_reason: 'exit', exit_code: 3 });
  });

  it('passes binary stdin through to the command unchanged, with EOF', async () => {
    const input = randomBytes(3 * 1024 * 1024);
    const r = await runToEnd('ssh', [...sshArgs(port, keyOnly(key.keyFile)), `${tenant.app}@127.0.0.1`, 'sha256sum; echo done'], { input });
    expect(r.stdout.toString()).toBe(`${createHash('sha256').update(input).digest('hex')}  -\ndone\n`);
    expect(r.code).toBe(0);
  });

  it('creates and attaches an interactive session in a terminal', async () => {
    const cmd = ['ssh', '-tt', ...sshArgs(port, keyOnly(key.keyFile)), `${tenant.app}@127.0.0.1`].map(q).join(' ');
    const term = await Terminal.start(cmd, { cols: 90, rows: 20 });
    terminals.push(term);
    await term.waitForText(PROMPT);
    await term.typeLine('echo "$GREETING-$APP_ENV"');
    await term.waitForText(/^-test\s*$/m);
    await term.typeLine('exit 5');
    expect(await term.exitStatus()).toBe(5);

    // Its program started once the client was there: the recording starts at the client's size.
    const [latest] = (await stack.api.get(`/sessions?app=${tenant.app}`, tenant.token)).body.items as { id: number }[];
    await waitForState(stack, tenant.token, latest!.id, 'ended', 20_000);
    const { header, events } = await recordingOf(latest!.id);
    expect(header).toMatchObject({ width: 90, height: 20 });
    expect(events.filter((e) => e[1] === 'r')).toEqual([]);
  });

  it('an unknown app, or one of another account, is one clear line and exit status 1', async () => {
    const r = await runToEnd('ssh', [...sshArgs(port, keyOnly(key.keyFile)), 'no-such-app@127.0.0.1', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('essh: App "no-such-app" was not found, or you may not see it.');
  });

  it('a key nobody registered is refused', async () => {
    const stranger = await generateKey(dir, 'stranger');
    const r = await runToEnd('ssh', [...sshArgs(port, keyOnly(stranger.keyFile)), `${tenant.app}@127.0.0.1`, 'true']);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/Permission denied/);
  });

  it('the plan limit is one clear line and exit status 1', async () => {
    const small = await createTenant(stack, { plan: 'development' });
    const smallKey = await newRegisteredKey(small, 'small');
    const held = await createSession({}, small);
    const r = await runToEnd('ssh', [...sshArgs(port, keyOnly(smallKey.keyFile)), `${small.app}@127.0.0.1`, 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^essh: Account ${small.account} is at its limit of 1 concurrent session .*session ${held.id}`));
    await stack.api.post(`/sessions/${held.id}/terminate`, small.token, {});
  });
});
