import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { EsshApi } from '../cli/api.js';
import { addKey } from '../cli/keys.js';
import { apiOk } from './api-client.js';
import type { BenchContext } from './types.js';

const run = promisify(execFile);

/**
 * OpenSSH against the portal as a user would run it: a key registered for the tenant's user, then
 * `ssh -p PORT APP@127.0.0.1 …`. Returns the arguments that go before `APP@host`.
 */
export async function openSshFor(ctx: BenchContext, token: string): Promise<string[]> {
  const me = await apiOk<{ id: number }>(ctx, 'GET', '/me', token);
  const key = await registeredKey(ctx, token, me.id);
  return [
    '-p', String(ctx.runtime.sshPort), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
  ];
}

/** A new ed25519 key from ssh-keygen, registered for `userId` as `essh keys add` does it; answers the private key's file. */
export async function registeredKey(ctx: BenchContext, token: string, userId: number): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-bench-ssh-'));
  const key = path.join(dir, 'id_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  await addKey(new EsshApi({ api_url: ctx.apiUrl, token }), userId, key);
  return key;
}

export interface StdoutTransfer {
  bytes: number;
  /** First byte to last. */
  seconds: number;
  code: number | null;
  stderr: string;
  /** When the process ended (performance.now()). */
  endedAt: number;
}

/** Runs a client program and times its stdout from the first byte to the last, counting the bytes. */
export function readStdout(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<StdoutTransfer> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let bytes = 0;
    let firstAt = 0;
    let lastAt = 0;
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      lastAt = performance.now();
      if (!firstAt) firstAt = lastAt;
      bytes += c.length;
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ bytes, seconds: firstAt ? (lastAt - firstAt) / 1000 : 0, code, stderr, endedAt: performance.now() }));
  });
}

/**
 * The same with the bytes counted by `wc -c`, a process of its own reading the client's stdout, and
 * timed from start to exit: a benchmark whose portal runs in this process must not read hundreds of
 * megabytes on the portal's event loop (its clients are on other machines in use).
 */
export function countStdoutApart(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<StdoutTransfer> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const client = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const counter = spawn('wc', ['-c'], { stdio: [client.stdout, 'pipe', 'ignore'] });
    // Only wc reads the client's output: this process lets go of its end of the pipe.
    client.stdout.destroy();
    let counted = '';
    let stderr = '';
    counter.stdout.on('data', (c: Buffer) => (counted += c.toString('utf8')));
    client.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    client.once('error', reject);
    counter.once('error', reject);
    void Promise.all([once(client, 'close'), once(counter, 'close')]).then(([[code]]) => {
      const endedAt = performance.now();
      resolve({ bytes: Number(counted.trim()) || 0, seconds: (endedAt - started) / 1000, code: code as number | null, stderr, endedAt });
    });
  });
}
