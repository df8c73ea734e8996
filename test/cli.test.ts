// The `essh` CLI end to end: the real bin entry, in a real terminal (tmux) where a TTY matters, against
// a real runtime (API, SSH portal, Temporal, Docker).
import { readFile, rm, mkdtemp, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { createTenant, startTestStack, waitFor, waitForState, workflowBundle, type TestStack } from './harness.js';
import { Terminal, endAllSessions, findDescendant, q, run, runToEnd } from './portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh.js');
const PROMPT = /:\/app[$#] $/m;
let stack: TestStack;
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let configFile: string;
const terminals: Terminal[] = [];

beforeAll(async () => {
  stack = await startTestStack({
    env: { ESSH_PORTAL_HEARTBEAT_S: '1' },
    parts: { api: true, worker: true, hostStacks: ['local'], workflowBundle: workflowBundle(), portal: true },
  });
  tenant = await createTenant(stack, { plan: 'scale' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-cli-test-'));
  configFile = path.join(dir, 'config', 'essh.json');
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
  if (stack) await endAllSessions(stack);
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const cliEnv = (extra: Record<string, string> = {}) => {
  const env: NodeJS.ProcessEnv = { ...process.env, ESSH_CONFIG: configFile };
  delete env.ESSH_API_URL;
  delete env.ESSH_TOKEN;
  return { ...env, ...extra };
};
const essh = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  runToEnd(process.execPath, [ESSH, ...args], { input: opts.input, env: cliEnv(opts.env), timeoutMs: 60_000 });

/** `stty -a` without the size line: the terminal's modes, which the CLI must give back as it found them. */
const sttyModes = async (name: string) => (await readFile(path.join(dir, name), 'utf8')).replace(/rows \d+; columns \d+;/, '');

/** `essh ssh` in a tmux pane, with `stty -a` of that terminal taken before and after. */
async function esshInTerminal(app: string, opts: { cols?: number; rows?: number } = {}) {
  const script = [
    `stty -a > ${q(path.join(dir, 'stty-before'))}`,
    `${q(process.execPath)} ${q(ESSH)} ssh ${q(app)}`,
    'rc=$?',
    `stty -a > ${q(path.join(dir, 'stty-after'))}`,
    'exit $rc',
  ].join('; ');
  const t = await Terminal.start(`ESSH_CONFIG=${q(configFile)} sh -c ${q(script)}`, opts);
  terminals.push(t);
  return t;
}

describe('essh login', () => {
  it('refuses a bad token with one line, then stores a good login in a 0600 file', async () => {
    const bad = await essh(['login', '--api', stack.url, '--token', 'essh_wrong']);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^essh: This API token is not valid/);

    const ok = await essh(['login', '--api', stack.url, '--token', tenant.token]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain(`as ${tenant.user.name} <${tenant.user.email}>`);
    expect(JSON.parse(await readFile(configFile, 'utf8'))).toEqual({ api_url: stack.url, token: tenant.token });
    expect((await stat(configFile)).mode & 0o777).toBe(0o600);
  });
});

describe('essh ssh in a real terminal', () => {
  it('shows progress, attaches, types, follows a resize, exits with the remote code and restores the terminal', async () => {
    const term = await esshInTerminal(tenant.app, { cols: 90, rows: 25 });
    const progress = await term.waitForText(/Provisioning container for session (\d+)… ready in \d+\.\d s/);
    const id = Number(progress[1]);
    await term.waitForText(PROMPT);
    await waitForState(stack, tenant.token, id, 'active', 10_000);
    await term.typeLine('echo "cli-$((2+3))"');
    await term.waitForText(/^cli-5\s*$/m);
    await term.typeLine('stty size');
    await term.waitForText(/^25 90\s*$/m);
    await term.resizeAndWaitForStty(132, 43);
    await term.typeLine('exit 9');
    expect(await term.exitStatus()).toBe(9);
    const before = await sttyModes('stty-before');
    expect(before).toMatch(/ icanon .* echo /s);
    expect(await sttyModes('stty-after')).toBe(before);
    const ended = await waitForState(stack, tenant.token, id, 'ended', 20_000);
    expect(ended).toMatchObject({ end_reason: 'exit', exit_code: 9 });
  });

  it('restores the terminal when the CLI is killed by a signal while attached', async () => {
    const term = await esshInTerminal(tenant.app);
    await term.waitForText(PROMPT);
    const cli = await findDescendant(await term.panePid(), path.basename(process.execPath));
    expect(cli).toBeDefined();
    // While attached the local terminal is raw (the remote TTY does the echoing and line editing).
    const { stdout: during } = await run('stty', ['-a', '-F', await term.paneTty()]);
    expect(during).toMatch(/ -icanon /);
    expect(during).toMatch(/ -echo /);
    process.kill(cli!, 'SIGTERM');
    expect(await term.exitStatus()).toBe(128 + 15);
    const before = await sttyModes('stty-before');
    expect(before).toMatch(/ icanon .* echo /s);
    expect(await sttyModes('stty-after')).toBe(before);
  });
});

describe('essh ssh without a terminal, and the other commands', () => {
  it('runs a command after --, keeping stdout and stderr apart, with its exit code', async () => {
    const r = await essh(['ssh', tenant.app, '--container-size', '256', '--', 'sh', '-c', 'cat; echo out; echo err >&2; exit 4'], { input: 'from-stdin\n' });
    expect(r.stdout.toString()).toBe('from-stdin\nout\n');
    expect(r.stderr).toMatch(/^Provisioning container for session \d+… ready in \d+\.\d s\nerr\n$/);
    expect(r.code).toBe(4);
    const id = Number(/session (\d+)/.exec(r.stderr)![1]);
    const op = await essh(['operation', String(id), '--json']);
    expect(op.code).toBe(0);
    const ended = await waitFor('the operation to finish', async () => {
      const o = await essh(['operation', String(id), '--json']);
      const body = JSON.parse(o.stdout.toString());
      return body.status === 'succeeded' ? body : undefined;
    }, 20_000, 500);
    expect(ended).toMatchObject({ id, type: 'execute', command: ['sh', '-c', 'cat; echo out; echo err >&2; exit 4'], container_size_mb: 256, end_reason: 'exit', exit_code: 4 });
  });

  it('API errors are one clear line and a non-zero exit', async () => {
    const unknown = await essh(['ssh', 'no-such-app', '--', 'true']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('essh: App "no-such-app" was not found, or you may not see it.\n');

    const badToken = await essh(['sessions'], { env: { ESSH_API_URL: stack.url, ESSH_TOKEN: 'essh_nope' } });
    expect(badToken.code).toBe(1);
    expect(badToken.stderr).toMatch(/^essh: This API token is not valid[^\n]*\n$/);

    const small = await createTenant(stack, { plan: 'development' });
    const held = await stack.api.post(`/apps/${small.app}/sessions`, small.token, {});
    const limited = await essh(['ssh', small.app, '--', 'true'], { env: { ESSH_API_URL: stack.url, ESSH_TOKEN: small.token } });
    expect(limited.code).toBe(1);
    expect(limited.stderr).toMatch(new RegExp(`^essh: Account ${small.account} is at its limit of 1 concurrent session[^\\n]*session ${held.body.id}[^\\n]*\\n$`));

    const badSize = await essh(['ssh', tenant.app, '--container-size', 'lots']);
    expect(badSize.code).not.toBe(0);
    expect(badSize.stderr).toMatch(/--container-size must be a positive whole number/);
    await stack.api.post(`/sessions/${held.body.id}/terminate`, small.token, {});
  });

  it('sessions lists, terminate ends a session with the reason', async () => {
    const s = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    await waitForState(stack, tenant.token, s.body.id, 'waiting_for_client');
    const listed = await essh(['sessions', '--app', tenant.app]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.toString()).toMatch(/^ID\s+APP\s+STATE\s+USER\s+CREATED\s+END\n/);
    expect(listed.stdout.toString()).toMatch(new RegExp(`^${s.body.id}\\s+${tenant.app}\\s+waiting_for_client\\s+${tenant.user.email}`, 'm'));
    const json = JSON.parse((await essh(['sessions', '--json'])).stdout.toString());
    expect(json.map((x: any) => x.id)).toContain(s.body.id);

    const t = await essh(['terminate', String(s.body.id), '--reason', 'done here']);
    expect(t.code).toBe(0);
    const ended = await waitForState(stack, tenant.token, s.body.id, 'ended');
    expect(ended).toMatchObject({ end_reason: 'terminated', end_message: 'done here', ended_by: tenant.user.email });
  });
});
