// Which test files load the 2-core machine most, and the lock that keeps any two of them from running at
// once (the other files still run beside them, three files at a time). Chosen by the CPU seconds their
// processes and children spent (ESSH_TEST_COST_LOG, test/support/file-cost.ts) and by what they drive at once;
// docs/tests.md ("Heavy files") has the figures. Under load their waits were the ones that ran out: the
// 30 clients' prompts and reattaches of scale-live-sessions, a second Temporal server's start.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

// exec-sessions (29 CPU s over 557 s, 100 back-to-back OpenSSH sessions) is left beside them: with it
// the one-at-a-time chain (~9–10 min) would outlast the rest of the suite (~8.5 min) and lengthen
// every run, and CI's three passes.
export const HEAVY_FILES = [
  'test/scale-live-sessions.test.ts', // 61 live sessions with a client fleet, worker and host processes killed and restarted
  'test/ops-temporal.test.ts', // a second Temporal dev server and Chromium
  'test/scale-out.test.ts', // two host-worker processes beside the test's own runtime
  'test/portal-abuse.test.ts', // 200 held connections and 1000 bad passwords in a burst
];

export const isHeavy = (file: string) => HEAVY_FILES.includes(path.relative(process.cwd(), file));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Takes the lock file (created exclusively, holding the taker's pid), waiting for it as long as a live
 * process holds it; one whose holder died is taken over. Resolves with the ms waited.
 */
export async function takeLock(lockPath: string, holder: string): Promise<{ waitedMs: number; release: () => void }> {
  const started = Date.now();
  for (;;) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, `${process.pid} ${holder}\n`);
      closeSync(fd);
      return { waitedMs: Date.now() - started, release: () => rmSync(lockPath, { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(readFileSync(lockPath, 'utf8').split(' ')[0] ?? 0);
    if (pid > 0 && !alive(pid)) {
      rmSync(lockPath, { force: true });
      continue;
    }
    await sleep(500);
  }
}
