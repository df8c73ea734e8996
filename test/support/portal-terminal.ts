// Real terminals and real SSH clients for the portal and CLI tests: tmux panes, OpenSSH, ssh-keygen.
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { EsshApi } from '../../cli/api.js';
import { addKey } from '../../cli/keys.js';
import { sleep, waitFor, type TestStack } from './harness.js';

export const run = promisify(execFile);

/** A tmux server of its own (its own socket) with one pane running `command`. */
export class Terminal {
  private constructor(
    readonly socket: string,
    readonly dir: string,
  ) {}

  static async start(command: string, opts: { cols?: number; rows?: number; env?: Record<string, string> } = {}) {
    const socket = `essh-test-${randomBytes(4).toString('hex')}`;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-term-'));
    const t = new Terminal(socket, dir);
    const envArgs = Object.entries(opts.env ?? {}).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
    // The pane's command records its own exit status, since the pane goes away with it.
    const wrapped = `${command}; echo $? > ${path.join(dir, 'exit-status')}; sleep 600`;
    await t.tmux('-f', '/dev/null', 'new-session', '-d', '-s', 'main', '-x', String(opts.cols ?? 100), '-y', String(opts.rows ?? 30), ...envArgs, wrapped);
    await t.tmux('set-option', '-g', 'history-limit', '5000');
    return t;
  }

  tmux(...args: string[]) {
    return run('tmux', ['-L', this.socket, ...args]);
  }

  /** Types text literally (no key names), then Enter. */
  async typeLine(text: string) {
    await this.tmux('send-keys', '-t', 'main', '-l', text);
    await this.tmux('send-keys', '-t', 'main', 'Enter');
  }

  async keys(...keys: string[]) {
    await this.tmux('send-keys', '-t', 'main', ...keys);
  }

  async screen(): Promise<string> {
    const { stdout } = await this.tmux('capture-pane', '-p', '-J', '-t', 'main', '-S', '-');
    return stdout;
  }

  async waitForText(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return waitFor(`the terminal to show ${pattern}`, async () => (await this.screen()).match(pattern) ?? undefined, timeoutMs, 100).catch(
      async (err) => {
        throw new Error(`${(err as Error).message}\n--- screen ---\n${await this.screen().catch(() => '')}`);
      },
    );
  }

  async resize(cols: number, rows: number) {
    await this.tmux('resize-window', '-t', 'main', '-x', String(cols), '-y', String(rows));
  }

  /**
   * Resizes the window, then runs `stty size` in the remote shell until it reports the new size: the
   * resize travels asynchronously (SIGWINCH, SSH window-change, Docker), so one early `stty` may
   * still see the old one.
   */
  async resizeAndWaitForStty(cols: number, rows: number, timeoutMs = 15_000) {
    await this.resize(cols, rows);
    const want = new RegExp(`^${rows} ${cols}\\s*$`, 'm');
    await waitFor(`stty size to say ${rows} ${cols}`, async () => {
      await this.typeLine('clear; stty size');
      await sleep(500);
      return want.test(await this.screen());
    }, timeoutMs, 0);
  }

  /** The exit status of the pane's command, once it has ended. */
  async exitStatus(timeoutMs = 20_000): Promise<number> {
    const text = await waitFor(
      'the terminal command to exit',
      () => readFile(path.join(this.dir, 'exit-status'), 'utf8').then((s) => (s.trim() ? s : undefined)).catch(() => undefined),
      timeoutMs,
      100,
    );
    return Number(text.trim());
  }

  /** The pid of the pane's first process (the shell that runs the command). */
  async panePid(): Promise<number> {
    const { stdout } = await this.tmux('display-message', '-p', '-t', 'main', '#{pane_pid}');
    return Number(stdout.trim());
  }

  /** The terminal device of the pane (for `stty -F`). */
  async paneTty(): Promise<string> {
    const { stdout } = await this.tmux('display-message', '-p', '-t', 'main', '#{pane_tty}');
    return stdout.trim();
  }

  async stop() {
    await this.tmux('kill-server').catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A descendant pid of `pid` whose program is `name`: the file name of its argv[0]. Not `comm`, the
 * thread name, which Node.js 24 sets to "MainThread".
 */
export async function findDescendant(pid: number, name: string): Promise<number | undefined> {
  const { stdout } = await run('ps', ['-e', '-o', 'pid=,ppid=,args=']);
  const rows = stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)).map(([p, pp, argv0]) => ({ pid: Number(p), ppid: Number(pp), comm: path.basename(argv0 ?? '') }));
  const family = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rows) if (family.has(r.ppid) && !family.has(r.pid)) (family.add(r.pid), (grew = true));
  }
  return rows.find((r) => family.has(r.pid) && r.pid !== pid && r.comm === name)?.pid;
}

/** OpenSSH options for a portal on loopback: no known_hosts, no user config, quiet. */
export function sshArgs(port: number, extra: string[] = []): string[] {
  return [
    '-F', '/dev/null', '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10', ...extra,
  ];
}

export const passwordOnly = ['-o', 'PreferredAuthentications=password', '-o', 'PubkeyAuthentication=no', '-o', 'NumberOfPasswordPrompts=1'];
export const keyOnly = (keyFile: string) => [
  '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'PreferredAuthentications=publickey', '-o', 'BatchMode=yes',
];

/** Shell-quotes one argument for the tmux pane's /bin/sh. */
export const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export async function writeSecretFile(dir: string, name: string, content: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, content, { mode: 0o600 });
  return file;
}

/** A fresh ed25519 key pair from ssh-keygen; returns the private key path and the public key line. */
export async function generateKey(dir: string, name = 'id_ed25519'): Promise<{ keyFile: string; publicKey: string }> {
  const keyFile = path.join(dir, name);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `essh-test-${name}`, '-f', keyFile]);
  return { keyFile, publicKey: (await readFile(`${keyFile}.pub`, 'utf8')).trim() };
}

/**
 * Registers the key of `keyFile` for user `userId` as its holder does, by `essh keys add`'s own steps:
 * the API's challenge, signed by ssh-keygen with the key, sent with the public key.
 */
export function registerKey(stack: Pick<TestStack, 'url'>, token: string, userId: number, keyFile: string) {
  return addKey(new EsshApi({ api_url: stack.url, token }), userId, keyFile);
}

/**
 * OpenSSH to `APP@127.0.0.1` on the portal, running a program that writes `size` random bytes to a file,
 * prints their SHA-256 on stderr, then streams them to stdout (then runs `after`, if given): what
 * arrives is checked against the sum the container computed. `received` and `digest()` are what stdout
 * delivered so far; another 'data' listener on `ssh.stdout` runs after the count.
 */
export function downloadRandomBytes(port: number, app: string, keyFile: string, size: number, after = '') {
  const remote = `head -c ${size} /dev/urandom > /tmp/data && sha256sum /tmp/data >&2 && cat /tmp/data${after ? ` && ${after}` : ''}`;
  const ssh: ChildProcessByStdio<null, Readable, Readable> = spawn('ssh', [...sshArgs(port, keyOnly(keyFile)), `${app}@127.0.0.1`, remote], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const hash = createHash('sha256');
  const download = {
    ssh,
    received: 0,
    stderr: '',
    exited: false,
    exit: new Promise<number | null>((resolve) => ssh.on('close', (code) => {
      download.exited = true;
      resolve(code);
    })),
    digest: () => hash.digest('hex'),
    /** The sum the container printed. */
    expectedDigest: () => /^([0-9a-f]{64})\s/m.exec(download.stderr)?.[1],
  };
  ssh.stderr.on('data', (c: Buffer) => (download.stderr += c));
  ssh.stdout.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    download.received += chunk.length;
  });
  return download;
}

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program to the end with optional stdin, collecting its output. */
export function runToEnd(cmd: string, args: string[], opts: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/**
 * Ends every session of the stack and waits until their workflows have removed the containers: a
 * stack stopped earlier would leave its containers behind on the shared engine.
 */

export { sleep };
export { endAllSessions } from './harness.js';
