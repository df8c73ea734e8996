import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { drainShell, openPortalShell, type PortalTarget } from '../portal/client.js';
import { DEMO_IMAGE } from '../stack/seed.js';
import { apiOk, endSession } from './api-client.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const MEGABYTES = Number(process.env.ESSH_BENCH_THROUGHPUT_MB ?? 100);
const ROUNDS = Number(process.env.ESSH_BENCH_THROUGHPUT_ROUNDS ?? 3);
const BYTES = MEGABYTES * 1024 * 1024;
const MB = 1024 * 1024;
const ESSH_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'essh.js');
const DATA = '/tmp/essh-bench.dat';
// Random bytes written to a file inside the container first: both sides then read the same kind of
// data from the same kind of file, and the writing is not part of what is timed (first byte → last).
const MAKE_DATA = `head -c ${BYTES} /dev/urandom > ${DATA}`;

interface Transfer {
  bytes: number;
  seconds: number;
}

/** A session without a TTY whose command prints the data once the client is attached. */
async function throughEssh(ctx: BenchContext, app: string, token: string): Promise<Transfer> {
  const created = await apiOk<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${app}/sessions`, token, {
    command: ['sh', '-c', `${MAKE_DATA} && cat ${DATA}`], tty: false, start_on_connect: true,
  });
  try {
    const shell = await openPortalShell(created.connect, { pty: null });
    try {
      let stderr = '';
      const r = await drainShell(shell, (c) => (stderr += c.toString('utf8')));
      if (r.exitCode !== 0 || r.bytes !== BYTES) {
        throw new Error(`session ${created.id}: got ${r.bytes} of ${BYTES} bytes, exit ${r.exitCode}: ${stderr.slice(0, 300)}`);
      }
      return { bytes: r.bytes, seconds: r.seconds };
    } finally {
      shell.close();
    }
  } finally {
    await endSession(ctx, created.id, token);
  }
}

/**
 * The real client: `essh ssh APP -- sh -c …` with stdout on a pipe (so no TTY is asked for), read from
 * its stdout like the docker CLI's below. The session ends when the command exits.
 */
function throughEsshCli(ctx: BenchContext, app: string, token: string): Promise<Transfer & { id: number }> {
  const env = { ...process.env, ESSH_API_URL: ctx.apiUrl, ESSH_TOKEN: token, ESSH_CONFIG: '/nonexistent/essh-bench-config.json' };
  return readStdout(process.execPath, [ESSH_BIN, 'ssh', app, '--', 'sh', '-c', `${MAKE_DATA} && cat ${DATA}`], env).then(async (r) => {
    const id = Number(/session (\d+)/.exec(r.stderr)?.[1]);
    if (id) await endSession(ctx, id, token);
    return { ...r, id };
  });
}

/** The baseline: `docker exec <container> cat` of the same data, read from the docker CLI's stdout. */
function throughDockerExec(container: string): Promise<Transfer> {
  return readStdout('docker', ['exec', container, 'cat', DATA], process.env);
}

/**
 * The engine's own ceiling for a session-like container: `docker run` (attached, stdout on a pipe) of
 * the same command, with the engine's default log driver recording the output as it does for sessions.
 */
function throughDockerRun(): Promise<Transfer> {
  return readStdout('docker', ['run', '--rm', '--memory', '1024m', DEMO_IMAGE, 'sh', '-c', `${MAKE_DATA} && cat ${DATA}`], process.env);
}

/** Runs a client program and times its stdout from the first byte to the last. */
function readStdout(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<Transfer & { stderr: string }> {
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
    child.once('close', (code) => {
      if (code !== 0 || bytes !== BYTES) return reject(new Error(`${path.basename(file)} ${args.join(' ')}: ${bytes} of ${BYTES} bytes, exit ${code}: ${stderr.slice(0, 300)}`));
      resolve({ bytes, seconds: (lastAt - firstAt) / 1000, stderr });
    });
  });
}

async function execOk(docker: Docker, container: string, cmd: string[]) {
  const exec = await docker.getContainer(container).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  stream.resume();
  await new Promise((r) => stream.once('end', r));
  const { ExitCode } = await exec.inspect();
  if (ExitCode !== 0) throw new Error(`${cmd.join(' ')} in ${container} exited ${ExitCode}`);
}

export const portalThroughput: BenchModule = {
  name: 'portal-throughput',
  description: `${MEGABYTES} MB of output through the SSH portal (no TTY), beside \`docker exec … cat\` of the same data`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 2 });
    const name = `essh-bench-exec-${randomBytes(3).toString('hex')}`;
    // The same image and memory limit as a session's container.
    const container = await ctx.docker.createContainer({
      name, Image: DEMO_IMAGE, Cmd: ['sleep', '3600'], Labels: { 'essh.bench': 'true' },
      HostConfig: { Memory: 1024 * MB, MemorySwap: 1024 * MB, Init: true, SecurityOpt: ['no-new-privileges'] },
    });
    const essh: Transfer[] = [];
    const cli: Transfer[] = [];
    /** CPU seconds this process (the whole essh runtime: portal, capture, workers, API) spent per CLI transfer. */
    const runtimeCpuS: number[] = [];
    const exec: Transfer[] = [];
    const attached: Transfer[] = [];
    try {
      await container.start();
      await execOk(ctx.docker, name, ['sh', '-c', MAKE_DATA]);
      for (let i = 0; i < ROUNDS; i++) {
        const d = await throughDockerExec(name);
        const a = await throughDockerRun();
        attached.push(a);
        const cpu0 = process.cpuUsage();
        const c = await throughEsshCli(ctx, tenant.app, tenant.token);
        const cpu = process.cpuUsage(cpu0);
        runtimeCpuS.push((cpu.user + cpu.system) / 1e6);
        const e = await throughEssh(ctx, tenant.app, tenant.token);
        exec.push(d);
        cli.push(c);
        essh.push(e);
        ctx.progress(`portal-throughput ${i + 1}/${ROUNDS}: essh ssh ${(MEGABYTES / c.seconds).toFixed(1)} MB/s, in-process ssh2 ${(MEGABYTES / e.seconds).toFixed(1)} MB/s, docker exec ${(MEGABYTES / d.seconds).toFixed(1)} MB/s, docker run ${(MEGABYTES / a.seconds).toFixed(1)} MB/s`);
      }
    } finally {
      await container.remove({ force: true });
    }
    const rate = (t: Transfer) => t.bytes / MB / t.seconds;
    const median = (sample: Transfer[]) => percentile(sample.map(rate), 50);
    const cliP50 = median(cli);
    const execP50 = median(exec);
    const ratio = cliP50 / execP50;
    return [
      { benchmark: 'portal-throughput', metric: 'essh ssh -- cat (CLI stdout) median', value: cliP50, unit: 'MB/s', note: `${MEGABYTES} MB × ${ROUNDS}, no TTY, first byte → last` },
      { benchmark: 'portal-throughput', metric: 'essh ssh worst', value: Math.min(...cli.map(rate)), unit: 'MB/s' },
      {
        benchmark: 'portal-throughput', metric: 'essh runtime CPU per essh ssh transfer', value: percentile(runtimeCpuS, 50), unit: 's',
        note: process.env.ESSH_BENCH_SPLIT_HOST === '1' ? 'API + portal + main worker (host worker and capture in their own process)' : 'portal + drain capture + workers share one process',
      },
      { benchmark: 'portal-throughput', metric: 'in-process ssh2 client median', value: median(essh), unit: 'MB/s', note: 'client in the portal\'s own process (shares its CPU)' },
      { benchmark: 'portal-throughput', metric: 'docker exec cat median', value: execP50, unit: 'MB/s', note: 'baseline, docker CLI stdout' },
      { benchmark: 'portal-throughput', metric: 'docker exec cat worst', value: Math.min(...exec.map(rate)), unit: 'MB/s' },
      { benchmark: 'portal-throughput', metric: 'docker run (attached) median', value: median(attached), unit: 'MB/s', note: 'engine ceiling with its log driver on, as for a session' },
      { benchmark: 'portal-throughput', metric: 'ratio essh ssh / docker run (attached)', value: cliP50 / median(attached), unit: 'x' },
      { benchmark: 'portal-throughput', metric: 'ratio essh ssh / docker exec', value: ratio, unit: 'x', note: ratio >= 0.7 ? 'target >= 0.7 met' : 'target >= 0.7 NOT met' },
    ] satisfies BenchRow[];
  },
};
