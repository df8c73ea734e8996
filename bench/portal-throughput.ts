import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { openSshFor, readStdout, type StdoutTransfer } from './openssh.js';
import { startBaselineContainer, startSshdPeer } from './sshd-peer.js';
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

/** OpenSSH, as a user runs it: `ssh APP@host 'sh -c …'`, stdout to a pipe (no TTY). */
async function throughOpenSsh(sshArgs: string[], app: string): Promise<Transfer> {
  return checked('ssh', await readStdout('ssh', [...sshArgs, `${app}@127.0.0.1`, `${MAKE_DATA} && cat ${DATA}`]));
}

/**
 * The real essh client: `essh ssh APP -- sh -c …` with stdout on a pipe (so no TTY is asked for), read
 * from its stdout like the others.
 */
async function throughEsshCli(ctx: BenchContext, app: string, token: string): Promise<Transfer> {
  const env = { ...process.env, ESSH_API_URL: ctx.apiUrl, ESSH_TOKEN: token, ESSH_CONFIG: '/nonexistent/essh-bench-config.json' };
  return checked('essh ssh', await readStdout(process.execPath, [ESSH_BIN, 'ssh', app, '--', 'sh', '-c', `${MAKE_DATA} && cat ${DATA}`], env));
}

/** The baseline: `docker exec <container> cat` of the same data, read from the docker CLI's stdout. */
async function throughDockerExec(container: string): Promise<Transfer> {
  return checked('docker exec', await readStdout('docker', ['exec', container, 'cat', DATA]));
}

/** The transport's baseline (issue 20): OpenSSH's own sshd on this host running `docker exec … cat`. */
async function throughSshdDockerExec(sshdArgs: string[], container: string): Promise<Transfer> {
  return checked('sshd + docker exec', await readStdout('ssh', [...sshdArgs, 'docker', 'exec', container, 'cat', DATA]));
}

function checked(what: string, t: StdoutTransfer): Transfer {
  if (t.code !== 0 || t.bytes !== BYTES) throw new Error(`${what}: ${t.bytes} of ${BYTES} bytes, exit ${t.code}: ${t.stderr.slice(0, 300)}`);
  return t;
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
  description: `${MEGABYTES} MB of output through the SSH portal (no TTY) to OpenSSH and to essh ssh, beside \`docker exec … cat\` of the same data`,
  async run(ctx) {
    const tenant = await ctx.createTenant({ maxConcurrentSessions: 2 });
    const sshArgs = await openSshFor(ctx, tenant.token);
    const name = `essh-bench-exec-${randomBytes(3).toString('hex')}`;
    const openssh: Transfer[] = [];
    const cli: Transfer[] = [];
    /** CPU seconds this process (the whole essh runtime: API, workers, portal, journal, drains) spent per 100 MB through OpenSSH. */
    const runtimeCpuS: number[] = [];
    const exec: Transfer[] = [];
    const sshd: Transfer[] = [];
    const peer = await startSshdPeer();
    let container: Docker.Container | undefined;
    try {
      container = await startBaselineContainer(ctx.docker, name);
      await execOk(ctx.docker, name, ['sh', '-c', MAKE_DATA]);
      // Interleaved, so that all three see the same machine load.
      for (let i = 0; i < ROUNDS; i++) {
        const d = await throughDockerExec(name);
        const cpu0 = process.cpuUsage();
        const o = await throughOpenSsh(sshArgs, tenant.app);
        const cpu = process.cpuUsage(cpu0);
        runtimeCpuS.push(((cpu.user + cpu.system) / 1e6) * (100 / MEGABYTES));
        const c = await throughEsshCli(ctx, tenant.app, tenant.token);
        const s = await throughSshdDockerExec(peer.sshArgs, name);
        sshd.push(s);
        exec.push(d);
        openssh.push(o);
        cli.push(c);
        ctx.progress(`portal-throughput ${i + 1}/${ROUNDS}: OpenSSH ${(MEGABYTES / o.seconds).toFixed(1)} MB/s, essh ssh ${(MEGABYTES / c.seconds).toFixed(1)} MB/s, docker exec ${(MEGABYTES / d.seconds).toFixed(1)} MB/s, sshd + docker exec ${(MEGABYTES / s.seconds).toFixed(1)} MB/s, runtime CPU ${runtimeCpuS[i]!.toFixed(2)} s`);
      }
    } finally {
      await container?.remove({ force: true });
      await peer.stop();
    }
    const rate = (t: Transfer) => t.bytes / MB / t.seconds;
    const median = (sample: Transfer[]) => percentile(sample.map(rate), 50);
    const execP50 = median(exec);
    const sshRatio = median(openssh) / execP50;
    const cliRatio = median(cli) / execP50;
    const sshdP50 = median(sshd);
    const sshOverSshd = median(openssh) / sshdP50;
    const cliOverSshd = median(cli) / sshdP50;
    const cpu = percentile(runtimeCpuS, 50);
    const verdict = (ok: boolean, target: string) => `target ${target} ${ok ? 'met' : 'NOT met'}`;
    return [
      { benchmark: 'portal-throughput', metric: 'OpenSSH ssh APP@host cat, median', value: median(openssh), unit: 'MB/s', note: `${MEGABYTES} MB × ${ROUNDS}, no TTY, first byte → last` },
      { benchmark: 'portal-throughput', metric: 'essh ssh -- cat, median', value: median(cli), unit: 'MB/s' },
      { benchmark: 'portal-throughput', metric: 'docker exec cat, median', value: execP50, unit: 'MB/s', note: 'baseline, docker CLI stdout' },
      { benchmark: 'portal-throughput', metric: 'OpenSSH ssh host docker exec cat (sshd), median', value: sshdP50, unit: 'MB/s', note: 'baseline: Debian\'s sshd on loopback, its own keys, the same OpenSSH client' },
      { benchmark: 'portal-throughput', metric: 'ratio OpenSSH via portal / via sshd', value: sshOverSshd, unit: 'x', note: verdict(sshOverSshd >= 1.2, '>= 1.2 (issue 20)') },
      { benchmark: 'portal-throughput', metric: 'ratio essh ssh / OpenSSH via sshd', value: cliOverSshd, unit: 'x', note: verdict(cliOverSshd >= 1.0, '>= 1.0 (issue 20)') },
      { benchmark: 'portal-throughput', metric: 'ratio OpenSSH / docker exec', value: sshRatio, unit: 'x', note: verdict(sshRatio >= 0.5, '>= 0.5') },
      { benchmark: 'portal-throughput', metric: 'ratio essh ssh / docker exec', value: cliRatio, unit: 'x', note: verdict(cliRatio >= 0.4, '>= 0.4') },
      { benchmark: 'portal-throughput', metric: 'runtime CPU per 100 MB (OpenSSH)', value: cpu, unit: 's', note: verdict(cpu <= 3, '<= 3 s') },
    ] satisfies BenchRow[];
  },
};
