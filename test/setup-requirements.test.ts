// scripts/requirements.tsv is the one list of the programs the tests and benchmarks start, with their
// Debian packages: every program started in test/ and bench/ must have a row, read from the source
// (spawn, execFile, exec and their wrappers; tmux panes and `script -c`/`sh -c` command lines). Fast:
// no Docker, no Temporal, nothing started.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot, readRequirements, scanFile, scanSource, testAndBenchFiles, type ProgramStart } from './support/requirements.js';

const rows = readRequirements();
const listed = new Set(rows.map((r) => r.check));
const scans = testAndBenchFiles().map((f) => scanFile(f));
const starts = scans.flatMap((s) => s.starts);
const where = (s: ProgramStart[]) => s.map((x) => `${x.program} (${x.file}:${x.line})`);

describe('scripts/requirements.tsv', () => {
  it('has a row for every program that a test or benchmark starts', () => {
    expect(where(starts.filter((s) => !listed.has(s.program)))).toEqual([]);
  });

  it('knows what every call that starts a program starts', () => {
    // A program given by a variable the scan cannot follow: name it literally, or teach test/support/requirements.ts.
    expect(where(scans.flatMap((s) => s.unknown))).toEqual([]);
  });

  it('the scan still sees the programs the suite is known to start', () => {
    const seen = new Set(starts.map((s) => s.program));
    for (const p of ['ssh', 'ssh-keygen', 'ssh-keyscan', 'sshpass', 'tmux', 'asciinema', 'script', 'stty', 'ps', 'openssl', 'rsyslogd', 'docker']) {
      expect(seen, p).toContain(p);
    }
  });

  it('has well-formed rows, and those that later tests need already', () => {
    const uses = new Set(['start', 'test', 'postgres', 'bench', 'test-if-named']);
    for (const r of rows) {
      expect(r.pkg, r.check).toMatch(/^[a-z0-9][a-z0-9.+-]+$/);
      expect(r.check, r.check).toMatch(/^(dpkg:[a-z0-9.+-]+|\/\S+|[\w.+-]+)$/);
      for (const u of r.uses) expect(uses, `${r.check}: ${u}`).toContain(u);
    }
    // Named by pieces: scripts/packages.sh installs a test-if-named package once a file in test/ names it.
    const pkgOf = new Map(rows.map((r) => [r.check, r.pkg]));
    const [browser, metrics, metricsTool] = [['chrom', 'ium'], ['prome', 'theus'], ['prom', 'tool']].map((p) => p.join(''));
    expect(pkgOf.get(browser!)).toBe(browser);
    expect(pkgOf.get(metrics!)).toBe(metrics);
    expect(pkgOf.get(metricsTool!)).toBe(metrics);
    expect(pkgOf.get('gcc')).toBe('gcc');
    expect(rows.some((r) => r.pkg === 'libc6-dev')).toBe(true);
    expect(rows.some((r) => r.pkg === 'rsyslog-gnutls')).toBe(true);
  });

  it('is what the set-up reads, and CI installs nothing of its own', () => {
    expect(readFileSync(path.join(projectRoot, 'scripts/packages.sh'), 'utf8')).toContain('scripts/requirements.tsv');
    const ci = readFileSync(path.join(projectRoot, '.ci/run'), 'utf8').replace(/#.*/g, '');
    expect(ci).not.toMatch(/apt-get|apt |dpkg|pip |npm ci/);
  });
});

describe('the scan of test and benchmark sources', () => {
  const programs = (src: string) => scanSource(src).starts.map((s) => s.program);

  it('finds programs started directly, through promisify and through wrappers', () => {
    expect(programs(`
      import { execFile, spawn as start, execSync, spawn } from 'node:child_process';
      import { promisify } from 'node:util';
      const run = promisify(execFile);
      start('frobd', ['--config.file', conf]);
      await run('frobctl', ['check', 'config', conf]);
      execSync('gcc -static -o x x.c && ./x');
      spawn('/usr/bin/frobview', ['--version']);
      function launch(cmd: string, args: string[]): Promise<void> {
        return new Promise((r) => start(cmd, args).once('close', r));
      }
      await launch('frobview', ['--headless']);
    `).sort()).toEqual(['frobctl', 'frobd', 'frobview', 'frobview', 'gcc']);
  });

  it('follows launchers and command lines: sshpass, sh -c, script -c, tmux panes, joined argv', () => {
    expect(programs(`
      import { spawn } from 'node:child_process';
      spawn('sshpass', ['-f', file, 'ssh', '-T', host]);
      spawn('script', ['-qec', \`asciinema cat \${file} > out\`, '/dev/null']);
      const cmd = ['sshpass', '-e', 'ssh', '-tt', host].map(q).join(' ');
      await Terminal.start(cmd);
      await Terminal.start(\`FOO=1 sh -c \${q(['stty -a > f', 'tmux ls || true'].join('; '))}\`);
      spawn(process.execPath, ['bin/essh.js']);
    `).sort()).toEqual(['asciinema', 'script', 'sh', 'ssh', 'ssh', 'sshpass', 'sshpass', 'stty', 'tmux']);
  });

  it('leaves out what runs in a container and what is not a call', () => {
    expect(programs(`
      import { spawn } from 'node:child_process';
      // spawn('not-in-a-comment')
      const s = await createSession({ command: ['sh', '-c', 'sleep 1; exit 3'] });
      const m = /session (\\d+)/.exec(text);
      await docker.getContainer(id).exec({ Cmd: ['cat', '/x'] });
      const note = "spawn('not-in-a-string')";
    `)).toEqual([]);
  });

  it('reports a program it cannot name', () => {
    const scan = scanSource(`
      import { spawn } from 'node:child_process';
      spawn(pickProgram(), []);
    `);
    expect(scan.unknown.map((u) => u.program)).toEqual(['pickProgram()']);
  });

  it('takes the checkout\'s own essh (bin/essh, however its folder is named) for no system program', () => {
    const scan = scanSource(`
      import { spawn } from 'node:child_process';
      spawn(path.join(projectRoot, 'bin', 'essh'), ['--version']);
      spawn(path.join(dirOnPath, 'essh'), ['help']);
      spawn('essh', ['help']);
    `);
    expect(scan.unknown).toEqual([]);
    expect(scan.starts.map((s) => s.program)).toEqual(['essh']);
  });
});
