// The `essh` CLI where no essh runtime is needed: help, completion scripts (real bash and zsh, zsh in a
// real terminal), the one version, exit statuses when the API cannot be reached, and list pages as the
// paginated API will answer them (from a stand-in API: the real one answers plain arrays today).
import { execFile } from 'node:child_process';
import http from 'node:http';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { projectRoot } from '../lib/config.js';
import { buildProgram } from '../cli/main.js';
import { Terminal, q, runToEnd } from './support/portal-terminal.js';

const run = promisify(execFile);
const ESSH = path.join(projectRoot, 'bin', 'essh.js');
const pkg = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
let dir: string;
const terminals: Terminal[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-cli-offline-'));
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const cliEnv = (extra: Record<string, string> = {}) => {
  const env: NodeJS.ProcessEnv = { ...process.env, ESSH_CONFIG: path.join(dir ?? os.tmpdir(), 'none.json') };
  delete env.ESSH_API_URL;
  delete env.ESSH_TOKEN;
  return { ...env, ...extra };
};
const essh = (args: string[], env: Record<string, string> = {}) =>
  runToEnd(process.execPath, [ESSH, ...args], { env: cliEnv(env), timeoutMs: 30_000 });

/** Every command path of the program: [], ['login'], ['log-drains', 'list'], … */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return [prefix, ...cmd.commands.flatMap((c) => commandPaths(c, [...prefix, c.name()]))];
}

describe('help', () => {
  it('names the environment variables and the exit statuses, with examples, for the program and each command', async () => {
    const top = await essh(['--help']);
    expect(top.code).toBe(0);
    const text = top.stdout.toString();
    for (const v of ['ESSH_API_URL', 'ESSH_TOKEN', 'ESSH_CONFIG']) expect(text).toContain(v);
    expect(text).toMatch(/^Examples:\n {2}\$ essh /m);
    expect(text).toMatch(/^Exit status:\n.*255/m);
    for (const p of commandPaths(buildProgram()).slice(1)) {
      const h = await essh([...p, '--help']);
      expect(h.code, p.join(' ')).toBe(0);
      const help = h.stdout.toString();
      expect(help, p.join(' ')).toMatch(new RegExp(`^Examples:\\n {2}\\$ (essh ${p.join(' ')}|source <\\(essh completion|essh completion)`, 'm'));
      // Commands that talk to the API say where its URL and token come from.
      if (!['completion', 'logout', 'login'].includes(p[0]!)) expect(help, p.join(' ')).toMatch(/^Environment:\n(.*\n)*? {2}ESSH_TOKEN /m);
    }
    expect((await essh(['login', '--help'])).stdout.toString()).toMatch(/--token-stdin/);
  });
});

describe('one version', () => {
  it('essh --version is package.json\'s, and no source writes a version of its own', async () => {
    const v = await essh(['--version']);
    expect(v.stdout.toString().trim()).toBe(pkg.version);
    // The API's /healthz and OpenAPI version are checked against package.json in cli.test.ts; here,
    // that no source carries the version as a literal (it would drift at the next release).
    const literal = new RegExp(`['"\`]${pkg.version.replace(/\./g, '\\.')}['"\`]`);
    const offenders: string[] = [];
    for (const folder of ['cli', 'api', 'lib', 'domain', 'server', 'bin', 'portal', 'services', 'worker', 'host', 'journal', 'drains', 'redaction', 'recordings', 'shapes', 'workflows', 'activities', 'console']) {
      for (const f of await readdir(path.join(projectRoot, folder), { recursive: true })) {
        if (!/\.(ts|js)$/.test(f)) continue;
        if (literal.test(await readFile(path.join(projectRoot, folder, f), 'utf8'))) offenders.push(`${folder}/${f}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});

describe('completion', () => {
  it('bash: the script loads and completes commands, options, option choices and nested commands', async () => {
    const script = path.join(dir, 'essh.bash');
    await writeFile(script, (await essh(['completion', 'bash'])).stdout);
    const { stdout: registered } = await run('bash', ['-c', `source <(${q(process.execPath)} ${q(ESSH)} completion bash); complete -p essh`], { env: cliEnv() });
    expect(registered.trim()).toBe('complete -F _essh essh');
    // A Tab as bash makes it: COMP_WORDS and COMP_CWORD set, the function called, COMPREPLY read.
    const driver = path.join(dir, 'complete.bash');
    await writeFile(driver, [
      'source "$1"',
      'read -ra COMP_WORDS <<< "$2"',
      '[[ $2 == *" " ]] && COMP_WORDS+=("")',
      'COMP_CWORD=$((${#COMP_WORDS[@]} - 1))',
      '_essh',
      'echo "${COMPREPLY[*]}"',
    ].join('\n') + '\n');
    const complete = async (line: string) => {
      const { stdout } = await run('bash', [driver, script, line]);
      return stdout.trim().split(/\s+/).filter(Boolean);
    };
    expect(await complete('essh se')).toEqual(['session', 'sessions']);
    expect(await complete('essh sessions --st')).toEqual(['--state']);
    expect(await complete('essh sessions --state ')).toEqual(['provisioning', 'waiting_for_client', 'active', 'ending', 'ended']);
    expect(await complete('essh ssh -')).toEqual(expect.arrayContaining(['-t', '--tty', '-T', '--no-tty', '--container-size']));
    expect(await complete('essh log-drains ')).toEqual(expect.arrayContaining(['list', 'create', 'delete', 'resume']));
    expect(await complete('essh log-drains create acme --type ')).toEqual(['https', 'syslog', 'elasticsearch']);
    expect(await complete('essh completion ')).toEqual(['bash', 'zsh']);
    expect(await complete('essh login --')).toEqual(expect.arrayContaining(['--api', '--token-stdin']));
  });

  it('zsh: the script is valid zsh, and Tab completes in a real zsh in a terminal', async () => {
    const script = path.join(dir, '_essh');
    await writeFile(script, (await essh(['completion', 'zsh'])).stdout);
    await run('zsh', ['-n', script]);
    const zdot = path.join(dir, 'zdot');
    await mkdir(zdot, { recursive: true });
    await writeFile(path.join(zdot, '.zshrc'), [
      'PS1="zsh> "',
      'autoload -U compinit && compinit -u -d ' + q(path.join(zdot, '.zcompdump')),
      `essh() { ${q(process.execPath)} ${q(ESSH)} "$@"; }`,
      `source ${q(script)}`,
      'echo "loaded: $_comps[essh]"',
    ].join('\n') + '\n');
    const t = await Terminal.start(`ZDOTDIR=${q(zdot)} zsh -i`, { cols: 120, rows: 30 });
    terminals.push(t);
    await t.waitForText(/^loaded: _essh$/m);
    await t.keys('-l', 'essh sessions --sta');
    await t.keys('Tab');
    await t.waitForText(/essh sessions --state $/m);
    await t.keys('Tab');
    await t.waitForText(/active\s+ended\s+ending\s+provisioning\s+waiting_for_client/);
    await t.keys('C-u');
    await t.keys('-l', 'essh log-drains cr');
    await t.keys('Tab');
    await t.waitForText(/essh log-drains create $/m);
  });
});

describe('exit statuses without an API', () => {
  it('essh ssh exits 255 when essh itself fails; the other commands 1', async () => {
    const env = { ESSH_API_URL: 'http://127.0.0.1:1', ESSH_TOKEN: 'essh_x' };
    const ssh = await essh(['ssh', 'demo', '--', 'true'], env);
    expect(ssh.code).toBe(255);
    expect(ssh.stderr).toMatch(/^essh: cannot reach the essh API at http:\/\/127\.0\.0\.1:1 /);
    expect((await essh(['sessions'], env)).code).toBe(1);
    // Not logged in, and a usage error: essh's own failures too.
    expect((await essh(['ssh', 'demo'])).code).toBe(255);
    expect((await essh(['ssh'], env)).code).toBe(255);
    expect((await essh(['ssh', 'demo', '--container-size', 'lots'], env)).code).toBe(255);
    expect((await essh(['sessions', '--state', 'bogus'], env)).code).toBe(1);
  });
});

describe('list pages', () => {
  const session = (id: number, state = 'active') => ({
    id, app: 'demo', state, user: { id: 1, name: 'A', email: 'a@example.com' }, end_reason: null, exit_code: null, command: null,
    container_size_mb: 1024, created_at: '2026-01-01T00:00:00Z', connected_at: null, ended_at: null,
  });
  let server: http.Server;
  let url: string;
  const seen: string[] = [];
  let answer: (u: URL) => unknown = () => [];
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push(req.url!);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(answer(new URL(req.url!, 'http://x'))));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('follows next_cursor through { items } and { data } pages, with the filters on each, and takes a plain array', async () => {
    answer = (u) => {
      switch (u.searchParams.get('cursor')) {
        case null: return { items: [session(3), session(2)], next_cursor: 'c2' };
        case 'c2': return { data: [session(1)], next_cursor: 7 };
        case '7': return { items: [], next_cursor: null };
        default: return { items: [] };
      }
    };
    seen.length = 0;
    const r = await essh(['sessions', '--app', 'demo', '--state', 'active', '--json'], { ESSH_API_URL: url, ESSH_TOKEN: 'essh_x' });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.toString()).map((s: { id: number }) => s.id)).toEqual([3, 2, 1]);
    expect(seen).toEqual([
      '/sessions?app=demo&state=active',
      '/sessions?app=demo&state=active&cursor=c2',
      '/sessions?app=demo&state=active&cursor=7',
    ]);

    answer = () => [session(9)];
    const plain = await essh(['sessions'], { ESSH_API_URL: url, ESSH_TOKEN: 'essh_x' });
    expect(plain.stdout.toString()).toMatch(/^9\s+demo\s+active\s+a@example\.com/m);

    // An API that hands back the same cursor again is not followed for ever.
    answer = () => ({ items: [session(1)], next_cursor: 'again' });
    const loop = await essh(['sessions'], { ESSH_API_URL: url, ESSH_TOKEN: 'essh_x' });
    expect(loop.code).toBe(1);
    expect(loop.stderr).toMatch(/same next_cursor twice/);
  });
});
