// What processes and containers cost, read from /proc and the memory cgroup (v1, as Docker 20.10 with
// cgroupfs sets it up): memory (RSS, and PSS, which shares the pages several processes map), and CPU time.
import { readFile, readdir } from 'node:fs/promises';

/** Clock ticks per second of /proc/<pid>/stat (CLK_TCK: 100 on every Linux this runs on). */
const TICKS_PER_S = 100;

async function readOr(file: string): Promise<string | null> {
  return readFile(file, 'utf8').catch(() => null);
}

export async function cmdline(pid: number): Promise<string[] | null> {
  const raw = await readOr(`/proc/${pid}/cmdline`);
  return raw === null ? null : raw.split('\0').filter(Boolean);
}

/** Every pid whose command line satisfies `match`. */
export async function findPids(match: (args: string[]) => boolean): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const args = await cmdline(Number(name));
    if (args && match(args)) pids.push(Number(name));
  }
  return pids;
}

/** Resident and proportional set size of a process, in bytes (0 if it is gone). */
export async function memoryOf(pid: number): Promise<{ rss: number; pss: number }> {
  const rollup = await readOr(`/proc/${pid}/smaps_rollup`);
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(rollup ?? '')?.[1] ?? 0) * 1024;
  if (rollup) return { rss: field('Rss'), pss: field('Pss') };
  const status = await readOr(`/proc/${pid}/status`);
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status ?? '')?.[1] ?? 0) * 1024;
  return { rss, pss: rss };
}

export async function memoryOfAll(pids: number[]): Promise<{ rss: number; pss: number }> {
  const all = await Promise.all(pids.map(memoryOf));
  return { rss: all.reduce((a, m) => a + m.rss, 0), pss: all.reduce((a, m) => a + m.pss, 0) };
}

/** CPU seconds (user + system) a process has used so far. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readOr(`/proc/${pid}/stat`);
  if (!stat) return 0;
  // Fields after the command (which may hold spaces) start after its closing parenthesis.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / TICKS_PER_S;
}

/** The containerd shim of each of these containers (one process per container on Docker 20.10). */
export async function shimPids(containerIds: Set<string>): Promise<number[]> {
  return findPids((args) => /containerd-shim/.test(args[0] ?? '') && containerIds.has(args[args.indexOf('-id') + 1] ?? ''));
}

/** Memory charged to a container's cgroup: its processes' anonymous memory and page cache, in bytes. */
export async function containerMemory(containerId: string): Promise<{ rss: number; cache: number } | null> {
  const stat = await readOr(`/sys/fs/cgroup/memory/docker/${containerId}/memory.stat`);
  if (!stat) return null;
  const field = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(stat)?.[1] ?? 0);
  return { rss: field('total_rss'), cache: field('total_cache') };
}

/** The pid of the one process whose program is `name` (dockerd, containerd), or undefined. */
export async function pidOf(name: string): Promise<number | undefined> {
  const [pid] = await findPids((args) => (args[0] ?? '').split('/').pop() === name);
  return pid;
}

/** The Temporal dev server listening on this address (`temporal server start-dev --port P`). */
export async function temporalServerPid(address: string): Promise<number | undefined> {
  const port = address.split(':').pop();
  const [pid] = await findPids((args) => args.includes('start-dev') && args.includes('--port') && args[args.indexOf('--port') + 1] === port);
  return pid;
}
