// `scp` of a file out of a session's container through the portal (OpenSSH in its SFTP mode, the portal
// running sftp-server in the container and reading the packets' heads for the transfer's record)
// against `docker cp` of the same file out of the same container, interleaved in one run.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { apiOk, endSession, waitForState } from './api-client.js';
import { openSshFor } from './openssh.js';
import { percentile } from './stats.js';
import type { BenchModule, BenchRow } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_TRANSFER_MB ?? 100);
const ROUNDS = Number(process.env.ESSH_BENCH_TRANSFER_ROUNDS ?? 3);
const BYTES = MEGABYTES * 1024 * 1024;
const DATA = '/tmp/essh-bench-transfer.dat';

/** Runs a program to its end; resolves with the seconds it took (its start included: a user waits for that too). */
function timed(file: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve((performance.now() - started) / 1000) : reject(new Error(`${file} exited ${code}: ${stderr.slice(0, 300)}`))));
  });
}

export const fileTransfer: BenchModule = {
  name: 'file-transfer',
  description: `scp of ${MEGABYTES} MB out of a session's container through the portal, beside \`docker cp\` of the same file`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 1 });
    // scp's port option is -P.
    const scpArgs = (await openSshFor(ctx, tenant.token)).map((a) => (a === '-p' ? '-P' : a));
    const created = await apiOk<{ id: number }>(ctx, 'POST', `/apps/${tenant.app}/sessions`, tenant.token, {});
    const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-bench-transfer-'));
    const scpTimes: number[] = [];
    const cpTimes: number[] = [];
    try {
      await waitForState(ctx, created.id, ['waiting_for_client']);
      const { container_id: container } = await apiOk<{ container_id: string }>(ctx, 'GET', `/sessions/${created.id}`, tenant.token);
      // The file is made first (its writing is not timed), in the container's own file system.
      await timed('docker', ['exec', container, 'sh', '-c', `head -c ${BYTES} /dev/urandom > ${DATA}`]);
      const check = async (file: string, what: string) => {
        const size = (await stat(file)).size;
        if (size !== BYTES) throw new Error(`${what} copied ${size} of ${BYTES} bytes`);
        await rm(file);
      };
      for (let i = 0; i < ROUNDS; i++) {
        const viaDocker = path.join(dir, 'docker-cp.dat');
        cpTimes.push(await timed('docker', ['cp', `${container}:${DATA}`, viaDocker]));
        await check(viaDocker, 'docker cp');
        const viaScp = path.join(dir, 'scp.dat');
        scpTimes.push(await timed('scp', [...scpArgs, `session-${created.id}@127.0.0.1:${DATA}`, viaScp]));
        await check(viaScp, 'scp');
        ctx.progress(`file-transfer ${i + 1}/${ROUNDS}: scp ${(MEGABYTES / scpTimes[i]!).toFixed(1)} MB/s, docker cp ${(MEGABYTES / cpTimes[i]!).toFixed(1)} MB/s`);
      }
    } finally {
      await endSession(ctx, created.id, tenant.token).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
    const rate = (seconds: number[]) => percentile(seconds.map((s) => MEGABYTES / s), 50);
    const scp = rate(scpTimes);
    const cp = rate(cpTimes);
    const ratio = scp / cp;
    return [
      { benchmark: 'file-transfer', metric: 'scp session-<id>@host:FILE, median', value: scp, unit: 'MB/s', note: `${MEGABYTES} MB × ${ROUNDS}, the whole run of scp (handshake included)` },
      { benchmark: 'file-transfer', metric: 'docker cp CONTAINER:FILE, median', value: cp, unit: 'MB/s', note: 'baseline, the same file out of the same container' },
      { benchmark: 'file-transfer', metric: 'ratio scp / docker cp', value: ratio, unit: 'x', note: `target >= 0.3 ${ratio >= 0.3 ? 'met' : 'NOT met'}` },
    ] satisfies BenchRow[];
  },
};
