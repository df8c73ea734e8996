// The handover between two host processes on one machine (an upgrade): the new one starts on the same
// ESSH_HOST_ID, data dir and ports while the old one still serves its clients, and the old one, once
// sent SIGTERM, stops taking work and drains (docs/operations.md, "Upgrading a host process").
import { mkdirSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Logger } from './log.js';

/** What each live host process on a data dir says of itself in `<data dir>/host-processes/<pid>`. */
export interface HostProcessMark {
  pid: number;
  /** The process's start time (/proc/<pid>/stat), so that a pid reused since by another program is not taken for it. */
  startedAt: string;
  /** Its portal's instance (connection ids name it: portal/attachment.ts). */
  bootIds: string[];
  /** The ports it listens on: a successor waits for these rather than failing on EADDRINUSE. */
  ports: number[];
  /** It got SIGTERM and serves only the clients it has. */
  draining: boolean;
}

/** The kernel's start time of a process (clock ticks since boot), or '' where /proc does not say. */
function startTimeOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** Whether a process runs (signal 0 asks without sending; EPERM: it runs, as another user). */
export function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isAlive(mark: HostProcessMark): boolean {
  return pidRuns(mark.pid) && startTimeOf(mark.pid) === mark.startedAt;
}

/**
 * This process's mark among the host processes of a data dir, and the others'. Files rather than a
 * lock: two processes legitimately run at once during a handover, each must see whether the other is
 * still there (a SIGKILLed one removes nothing, so liveness is the pid and its start time, not the file).
 */
export class HostProcesses {
  private readonly dir: string;
  private readonly file: string;
  private readonly mark: HostProcessMark;

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'host-processes');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.file = path.join(this.dir, String(process.pid));
    this.mark = { pid: process.pid, startedAt: startTimeOf(process.pid), bootIds: [], ports: [], draining: false };
  }

  announce(change: { bootId?: string; port?: number; draining?: boolean }): void {
    if (change.bootId && !this.mark.bootIds.includes(change.bootId)) this.mark.bootIds.push(change.bootId);
    if (change.port && !this.mark.ports.includes(change.port)) this.mark.ports.push(change.port);
    if (change.draining !== undefined) this.mark.draining = change.draining;
    // Written aside and renamed: a successor reading it meanwhile never sees it half written.
    const aside = `${this.file}.new`;
    writeFileSync(aside, JSON.stringify(this.mark), { mode: 0o600 });
    renameSync(aside, this.file);
    registerWithdrawal(this.file);
  }

  /** The other live host processes on this data dir; marks of dead ones are removed on the way. */
  others(): HostProcessMark[] {
    const live: HostProcessMark[] = [];
    for (const f of readdirSync(this.dir)) {
      if (!/^\d+$/.test(f) || Number(f) === process.pid) continue;
      const file = path.join(this.dir, f);
      let mark: HostProcessMark;
      try {
        mark = JSON.parse(readFileSync(file, 'utf8')) as HostProcessMark;
      } catch {
        continue; // being written
      }
      if (isAlive(mark)) live.push(mark);
      else removeQuietly(file);
    }
    return live;
  }

  /** Whether the portal instance `bootId` is another process's that still runs (a predecessor draining). */
  isLiveElsewhere(bootId: string): boolean {
    return this.others().some((m) => m.bootIds.includes(bootId));
  }
}

const byDataDir = new Map<string, HostProcesses>();

/** One per data dir in this process (the tests run several stacks in one process). */
export function hostProcesses(dataDir: string): HostProcesses {
  const key = path.resolve(dataDir);
  let p = byDataDir.get(key);
  if (!p) byDataDir.set(key, (p = new HostProcesses(dataDir)));
  return p;
}

const withdrawn = new Set<string>();
function registerWithdrawal(file: string) {
  if (withdrawn.size === 0) process.once('exit', () => withdrawn.forEach(removeQuietly));
  withdrawn.add(file);
}

export function removeQuietly(file: string) {
  try {
    unlinkSync(file);
  } catch {
    // Gone already.
  }
}

/** Node 22.12+ and 23.1+ let two processes listen on one port at once (SO_REUSEPORT); Node 20 does not. */
export const REUSE_PORT = (() => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
})();

/** How often a successor tries the port its predecessor still holds. */
const BIND_RETRY_MS = 10;

/**
 * Listens on host:port. Where the port is held by another live host process of this data dir (the
 * predecessor of an upgrade), it is tried again every BIND_RETRY_MS until that process lets it go
 * (at its SIGTERM) or `waitS` passes; any other holder is an error at once, as before. Where Node
 * has `reusePort`, both listen at once and there is no wait at all.
 */
export async function listenAfterPredecessor(
  server: net.Server,
  opts: { host: string; port: number; dataDir?: string; waitS: number; log: Logger; what: string },
): Promise<void> {
  const tryListen = () => new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ port: opts.port, host: opts.host, ...(REUSE_PORT ? { reusePort: true } : {}) } as net.ListenOptions);
  });
  const deadline = Date.now() + opts.waitS * 1000;
  let waitingSince = 0;
  // A predecessor may exit between a refused bind and the look at its mark: one more try before giving up.
  let unexplained = 0;
  for (;;) {
    try {
      await tryListen();
      if (waitingSince) opts.log.warn({ what: opts.what, port: opts.port, waited_ms: Date.now() - waitingSince }, 'the predecessor let the port go: listening');
      return;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const heldByPredecessor = e.code === 'EADDRINUSE' && opts.port !== 0 && opts.dataDir !== undefined &&
        hostProcesses(opts.dataDir).others().some((m) => m.ports.includes(opts.port));
      if (!heldByPredecessor && (e.code !== 'EADDRINUSE' || opts.port === 0 || opts.dataDir === undefined || ++unexplained > 1)) throw err;
      if (!heldByPredecessor) {
        await new Promise((r) => setTimeout(r, BIND_RETRY_MS));
        continue;
      }
      unexplained = 0;
      if (Date.now() >= deadline) {
        throw new Error(
          `${opts.what}: port ${opts.port} is still held by the host process this one takes over from after ${opts.waitS} s; ` +
            'send that process SIGTERM (it then lets the port go and drains its clients), or raise ESSH_UPGRADE_BIND_WAIT_S',
        );
      }
      if (!waitingSince) {
        waitingSince = Date.now();
        // At warn: the one line an operator (or a test) waits for before sending the old process SIGTERM.
        opts.log.warn({ what: opts.what, port: opts.port }, 'the port is held by the host process this one takes over from: waiting for its SIGTERM');
      }
      await new Promise((r) => setTimeout(r, BIND_RETRY_MS));
    }
  }
}

/**
 * Resolves true once no other live host process of this data dir takes work (none left, or each
 * draining after its SIGTERM), false if `signal` aborts first. A successor polls the host task queue
 * and runs the host agent, warm pool and drain shipper only then: two of each on one engine would
 * race (a warm container renamed for two sessions at once, two reconcilers ending the same session).
 */
export async function untilPredecessorsDrain(dataDir: string, signal: AbortSignal, log: Logger): Promise<boolean> {
  const processes = hostProcesses(dataDir);
  let said = false;
  while (!signal.aborted) {
    if (processes.others().every((m) => m.draining)) {
      if (said) log.warn('the host process before this one is draining: this one takes the host\'s work now');
      return true;
    }
    if (!said) {
      said = true;
      log.warn('another host process of this data dir still takes work: this one waits for its SIGTERM before taking any');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}
