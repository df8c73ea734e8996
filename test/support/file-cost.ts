// A vitest setup file: with ESSH_TEST_COST_LOG set, each test file appends one JSON line to that file
// with its wall time and the CPU seconds its process and the processes it started and waited for
// (worker processes, Temporal servers, client fleets) spent; containers and the shared Temporal server
// are not counted. docs/tests.md ("Heavy files") says how these figures chose the heavy files.
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { File, Suite } from '@vitest/runner';

const LOG = process.env.ESSH_TEST_COST_LOG;
const TICKS_PER_S = 100;

/** utime+stime of this process, and cutime+cstime of its waited-for children, in seconds (/proc/self/stat). */
function cpuSeconds(): { self: number; children: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return { self: (f[11]! + f[12]!) / TICKS_PER_S, children: (f[13]! + f[14]!) / TICKS_PER_S };
}

if (LOG) {
  let file = '';
  let startedAt = 0;
  let before = { self: 0, children: 0 };
  beforeAll(({}, suite: Readonly<Suite | File>) => {
    file = path.relative(process.cwd(), suite.file.filepath);
    startedAt = Date.now();
    before = cpuSeconds();
  });
  afterAll(() => {
    const after = cpuSeconds();
    appendFileSync(LOG, JSON.stringify({
      file, wall_s: (Date.now() - startedAt) / 1000,
      cpu_self_s: +(after.self - before.self).toFixed(2), cpu_children_s: +(after.children - before.children).toFixed(2),
      at: new Date().toISOString(),
    }) + '\n');
  });
}
