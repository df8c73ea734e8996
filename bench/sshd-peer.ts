import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { freeLoopbackPort } from '../lib/free-port.js';
import { DEMO_IMAGE } from '../server/seed.js';

const run = promisify(execFile);
const SSHD = '/usr/sbin/sshd';

/**
 * Debian's OpenSSH server on loopback, the benchmarks' peer for the transport (issue 20): what a platform
 * without essh would run, `ssh host docker exec CONTAINER …`. It has a host key and a client key of its
 * own in a temporary folder, listens only on 127.0.0.1, and is stopped (and the folder removed) by `stop`.
 */
export interface SshdPeer {
  /** The `ssh` arguments that go before the remote command. */
  sshArgs: string[];
  stop(): Promise<void>;
}

export async function startSshdPeer(): Promise<SshdPeer> {
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: install Debian's openssh-server (scripts/setup.sh --for-bench does)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-bench-sshd-'));
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKey = path.join(dir, 'client_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', clientKey]);
  await writeFile(path.join(dir, 'authorized_keys'), await readFile(`${clientKey}.pub`), { mode: 0o600 });
  const port = await freeLoopbackPort();
  const user = os.userInfo().username;
  const config = [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`, 'UsePAM no', 'StrictModes no', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', `AllowUsers ${user}`, user === 'root' ? 'PermitRootLogin prohibit-password' : '',
  ].filter(Boolean).join('\n');
  await writeFile(path.join(dir, 'sshd_config'), config + '\n');
  // sshd insists on its privilege-separation folder even when told -D -e (Debian makes it at boot).
  if (!existsSync('/run/sshd')) await run('mkdir', ['-p', '-m', '0755', '/run/sshd']);
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const sshArgs = [
    '-p', String(port), '-i', clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${user}@127.0.0.1`,
  ];
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    await rm(dir, { recursive: true, force: true });
  };
  // Ready once it answers a command (it binds after reading its keys).
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await run('ssh', [...sshArgs, 'true'], { timeout: 5000 });
      return { sshArgs, stop };
    } catch (err) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`sshd on 127.0.0.1:${port} did not answer: ${(err as Error).message}; its log: ${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * A container for the sshd baseline to `docker exec` into: the demo image, asleep, with a session's
 * memory limit. Started; the caller removes it (`remove({ force: true })`).
 */
export async function startBaselineContainer(docker: Docker, name: string): Promise<Docker.Container> {
  const container = await docker.createContainer({
    name, Image: DEMO_IMAGE, Cmd: ['sleep', '3600'], Labels: { 'essh.bench': 'true' },
    HostConfig: { Memory: 1024 * MB, MemorySwap: 1024 * MB, Init: true, SecurityOpt: ['no-new-privileges'] },
  });
  await container.start();
  return container;
}

const MB = 1024 * 1024;
