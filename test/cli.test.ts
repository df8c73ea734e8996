// The `essh` CLI end to end: the real bin entry, in a real terminal (tmux) where a TTY matters, against
// a real runtime (API, SSH portal, Temporal, Docker).
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { loggedInCliConfig, createTenant, useTestStack, waitFor, waitForState, workflowBundle } from './support/harness.js';
import { Terminal, findDescendant, q, run, runToEnd, sleep } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh.js');
const PROMPT = /:\/app[$#] $/m;
const stack = useTestStack({
  env: { ESSH_PORTAL_HEARTBEAT_S: '1' },
  parts: { api: true, worker: true, hostStacks: ['local'], workflowBundle: workflowBundle(), portal: true },
});
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
let configFile: string;
const terminals: Terminal[] = [];

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-cli-test-'));
  // Logged in from the start, so that any test may run alone (-t); the login tests start without it.
  configFile = await loggedInCliConfig(dir, stack, tenant.token);
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
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

describe('essh login, whoami, logout', () => {
  it('refuses a bad token with one line, then stores a good login in a 0600 file', async () => {
    await rm(configFile);
    const bad = await essh(['login', '--api', stack.url, '--token-stdin'], { input: 'essh_wrong\n' });
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^essh: This API token is not valid/);

    const ok = await essh(['login', '--api', stack.url, '--token-stdin'], { input: `${tenant.token}\n` });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toBe(`Logged in to ${stack.url} as ${tenant.user.name} <${tenant.user.email}> (saved in ${configFile})\n`);
    expect(JSON.parse(await readFile(configFile, 'utf8'))).toEqual({ api_url: stack.url, token: tenant.token });
    expect((await stat(configFile)).mode & 0o777).toBe(0o600);
  });

  it('--token still works but warns that it lands in shell history; without a terminal it asks for --token-stdin', async () => {
    const old = await essh(['login', '--api', stack.url, '--token', tenant.token]);
    expect(old.code, old.stderr).toBe(0);
    expect(old.stderr).toMatch(/^essh: warning: --token leaves the token in your shell history and in ps;.*--token-stdin\nLogged in to /);
    const noTerminal = await essh(['login', '--api', stack.url]);
    expect(noTerminal.code).toBe(1);
    expect(noTerminal.stderr).toMatch(/^essh: no terminal to ask for the token on: pipe it in with --token-stdin/);
  });

  it('asks for the token in a real terminal without echoing it, and gives the terminal back as it was', async () => {
    await rm(configFile, { force: true });
    const script = [
      `stty -a > ${q(path.join(dir, 'stty-before'))}`,
      `${q(process.execPath)} ${q(ESSH)} login --api ${q(stack.url)}`,
      'rc=$?',
      `stty -a > ${q(path.join(dir, 'stty-after'))}`,
      'exit $rc',
    ].join('; ');
    const term = await Terminal.start(`ESSH_CONFIG=${q(configFile)} sh -c ${q(script)}`);
    terminals.push(term);
    await term.waitForText(/^API token: $/m);
    const { stdout: during } = await run('stty', ['-a', '-F', await term.paneTty()]);
    expect(during).toMatch(/ -echo /);
    await term.typeLine(tenant.token);
    await term.waitForText(/^Logged in to .* as Member /m);
    expect(await term.exitStatus()).toBe(0);
    expect(await term.screen()).not.toContain(tenant.token);
    expect(await term.screen()).not.toContain(tenant.token.slice(0, 12));
    expect(JSON.parse(await readFile(configFile, 'utf8'))).toEqual({ api_url: stack.url, token: tenant.token });
    const before = await sttyModes('stty-before');
    expect(before).toMatch(/ icanon .* echo /s);
    expect(await sttyModes('stty-after')).toBe(before);
  });

  it('whoami shows the user, role, accounts and API; logout forgets the token but not the API', async () => {
    const who = await essh(['whoami']);
    expect(who.code, who.stderr).toBe(0);
    const text = who.stdout.toString();
    expect(text).toMatch(new RegExp(`^user:\\s+${tenant.user.name} <${tenant.user.email}> \\(id ${tenant.user.id}\\)$`, 'm'));
    expect(text).toMatch(/^role:\s+member$/m);
    expect(text).toMatch(new RegExp(`^accounts:\\s+${tenant.account}$`, 'm'));
    expect(text).toMatch(new RegExp(`^api:\\s+${stack.url}$`, 'm'));
    expect(text).toMatch(new RegExp(`^token from:\\s+${configFile}$`, 'm'));
    const admin = JSON.parse((await essh(['whoami', '--json'], { env: { ESSH_TOKEN: stack.adminToken } })).stdout.toString());
    expect(admin).toMatchObject({ role: 'operator', api_url: stack.url, token_from: 'ESSH_TOKEN' });

    const out = await essh(['logout']);
    expect(out.code).toBe(0);
    expect(out.stderr).toBe(`Logged out: the token is removed from ${configFile}.\n`);
    expect(JSON.parse(await readFile(configFile, 'utf8'))).toEqual({ api_url: stack.url });
    const after = await essh(['whoami']);
    expect(after.code).toBe(1);
    expect(after.stderr).toBe('essh: not logged in: run `essh login` (or set ESSH_TOKEN)\n');
    expect((await essh(['logout'])).stderr).toMatch(/^Not logged in/);
    // The stored API is used by the next login.
    const again = await essh(['login', '--token-stdin'], { input: tenant.token });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(await readFile(configFile, 'utf8'))).toEqual({ api_url: stack.url, token: tenant.token });
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

  it('API errors are one clear line; essh ssh exits 255 on its own failures, the other commands 1', async () => {
    const unknown = await essh(['ssh', 'no-such-app', '--', 'true']);
    expect(unknown.code).toBe(255);
    expect(unknown.stderr).toBe('essh: App "no-such-app" was not found, or you may not see it.\n');

    const badToken = await essh(['sessions'], { env: { ESSH_API_URL: stack.url, ESSH_TOKEN: 'essh_nope' } });
    expect(badToken.code).toBe(1);
    expect(badToken.stderr).toMatch(/^essh: This API token is not valid[^\n]*\n$/);
    const badTokenSsh = await essh(['ssh', tenant.app, '--', 'true'], { env: { ESSH_API_URL: stack.url, ESSH_TOKEN: 'essh_nope' } });
    expect(badTokenSsh.code).toBe(255);
    expect(badTokenSsh.stderr).toMatch(/^essh: This API token is not valid[^\n]*\n$/);

    const small = await createTenant(stack, { plan: 'development' });
    const held = await stack.api.post(`/apps/${small.app}/sessions`, small.token, {});
    const limited = await essh(['ssh', small.app, '--', 'true'], { env: { ESSH_API_URL: stack.url, ESSH_TOKEN: small.token } });
    expect(limited.code).toBe(255);
    expect(limited.stderr).toMatch(new RegExp(`^essh: Account ${small.account} is at its limit of 1 concurrent session[^\\n]*session ${held.body.id}[^\\n]*\\n$`));

    const badSize = await essh(['ssh', tenant.app, '--container-size', 'lots']);
    expect(badSize.code).toBe(255);
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

describe('what the CLI prints from the server', () => {
  // Escape sequences that would retitle the operator's window, clear the screen and colour what follows
  // (C1 CSI), then a newline that would forge a line of output.
  const PAYLOAD = '\u001b]0;pwned\u0007\u001b[2J\u009b31m\nforged: line';
  const SHOWN = '\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\nforged: line';
  const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/; // all but the newlines ending essh's own lines

  it('shows control characters escaped: a terminate reason, a user name, an error message; --json stays the same data', async () => {
    const s = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    await waitForState(stack, tenant.token, s.body.id, 'waiting_for_client');
    expect((await stack.api.post(`/sessions/${s.body.id}/terminate`, stack.adminToken, { reason: PAYLOAD })).status).toBe(202);
    await waitForState(stack, tenant.token, s.body.id, 'ended');

    const text = await essh(['session', String(s.body.id)]);
    expect(text.code, text.stderr).toBe(0);
    const out = text.stdout.toString();
    expect(out).not.toMatch(RAW_CONTROL);
    expect(out.split('\n').find((l) => l.startsWith('end message:'))?.replace(/^end message:\s+/, '')).toBe(SHOWN);
    expect(out).not.toMatch(/^forged/m);
    const json = await essh(['session', String(s.body.id), '--json']);
    expect(json.stdout.toString()).not.toMatch(RAW_CONTROL);
    expect(JSON.parse(json.stdout.toString()).end_message).toBe(PAYLOAD);

    // A user whose name another admin wrote, seen by its own CLI.
    const named = await stack.api.post('/users', stack.adminToken, {
      name: `Mallory ${PAYLOAD}`, email: `mallory-${s.body.id}@example.com`, role: 'member', accounts: [tenant.account],
    });
    expect(named.status).toBe(201);
    const who = await essh(['whoami'], { env: { ESSH_TOKEN: named.body.token, ESSH_API_URL: stack.url } });
    expect(who.code, who.stderr).toBe(0);
    expect(who.stdout.toString()).not.toMatch(RAW_CONTROL);
    expect(who.stdout.toString()).toContain(`Mallory ${SHOWN} <mallory-`);

    // An error sentence naming what was asked for is printed escaped too.
    const refused = await essh(['sessions', '--user', 'nobody\u001b[2J@example.com']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).not.toMatch(RAW_CONTROL);
  });
});

/** An API in front of the real one that changes the `connect` block of a created session. */
async function apiProxy(rewrite: (connect: Record<string, unknown>) => void) {
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const r = await fetch(stack.url + req.url, {
      method: req.method,
      headers: { authorization: String(req.headers.authorization ?? ''), 'content-type': 'application/json' },
      body: req.method === 'GET' ? undefined : Buffer.concat(chunks),
    });
    let text = await r.text();
    if (r.status === 201 && /^\/apps\/[^/]+\/sessions$/.test(req.url!)) {
      const created = JSON.parse(text);
      rewrite(created.connect);
      text = JSON.stringify(created);
    }
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' }).end(text);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => new Promise((r) => server.close(r)) };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * `essh ARGS` (a shell snippet) in a tmux pane, with `stty -a` of that terminal taken before and after.
 * With `jobControl`, bash runs it as an interactive shell would: in a process group of its own that
 * has the terminal, so a Ctrl-C (SIGINT) reaches essh and not the shells around it.
 */
async function esshScriptInTerminal(args: string, opts: { cols?: number; rows?: number; jobControl?: boolean } = {}) {
  const script = [
    ...(opts.jobControl ? ['set -m'] : []),
    `stty -a > ${q(path.join(dir, 'stty-before'))}`,
    args.replace(/^essh\b/, `${q(process.execPath)} ${q(ESSH)}`).replace(/\| essh\b/, `| ${q(process.execPath)} ${q(ESSH)}`),
    'rc=$?',
    `stty -a > ${q(path.join(dir, 'stty-after'))}`,
    'exit $rc',
  ].join('; ');
  const t = await Terminal.start(`ESSH_CONFIG=${q(configFile)} ${opts.jobControl ? 'bash' : 'sh'} -c ${q(script)}`, opts);
  terminals.push(t);
  return t;
}

const sessionIdOf = (stderr: string) => Number(/session (\d+)/.exec(stderr)?.[1]);

describe('where the CLI sends secrets', () => {
  it('never sends the API token over plain http except to this machine', async () => {
    const login = await essh(['login', '--api', 'http://essh.example.com:3000', '--token-stdin'], { input: `${tenant.token}\n` });
    expect(login.code).not.toBe(0);
    expect(login.stderr).toMatch(/refusing to send your API token over plain http to essh\.example\.com:3000: use https:\/\/essh\.example\.com:3000/);
    const viaEnv = await essh(['sessions'], { env: { ESSH_API_URL: 'http://10.1.2.3:3000', ESSH_TOKEN: tenant.token } });
    expect(viaEnv.code).not.toBe(0);
    expect(viaEnv.stderr).toMatch(/refusing to send your API token over plain http to 10\.1\.2\.3:3000/);
  });

  it('never sends a session token to a portal whose host key the API did not announce', async () => {
    const noKey = await apiProxy((c) => {
      delete c.host_key;
      delete c.host_key_fingerprint;
    });
    try {
      const r = await essh(['ssh', tenant.app, '--', 'true'], { env: { ESSH_API_URL: noKey.url, ESSH_TOKEN: tenant.token } });
      expect(r.code).toBe(255);
      expect(r.stderr).toMatch(/announced no host key for its SSH portal .*refusing to send the session token/);
    } finally {
      await noKey.close();
    }
  });
});

describe('essh ssh: exit statuses and TTYs', () => {
  it('exits with the remote status, 1 included; 255 when the portal refuses the token or cannot be reached', async () => {
    const one = await essh(['ssh', tenant.app, '--', 'sh', '-c', 'exit 1']);
    expect(one.code, one.stderr).toBe(1);
    expect(one.stderr).toMatch(/^Provisioning container for session \d+… ready in \d+\.\d s\n$/);

    const wrongToken = await apiProxy((c) => void (c.token = 'essh_not_the_token'));
    try {
      const refused = await essh(['ssh', tenant.app, '--', 'true'], { env: { ESSH_API_URL: wrongToken.url, ESSH_TOKEN: tenant.token } });
      expect(refused.code).toBe(255);
      expect(refused.stderr).toMatch(/\nessh: the portal refused the session token for session-\d+ /);
      await stack.api.post(`/sessions/${sessionIdOf(refused.stderr)}/terminate`, tenant.token, {});
    } finally {
      await wrongToken.close();
    }

    const port = await closedPort();
    const nowhere = await apiProxy((c) => void (c.port = port));
    try {
      const unreachable = await essh(['ssh', tenant.app, '--', 'true'], { env: { ESSH_API_URL: nowhere.url, ESSH_TOKEN: tenant.token } });
      expect(unreachable.code).toBe(255);
      expect(unreachable.stderr).toMatch(new RegExp(`\\nessh: cannot reach the SSH portal at [^ ]+:${port} `));
      await stack.api.post(`/sessions/${sessionIdOf(unreachable.stderr)}/terminate`, tenant.token, {});
    } finally {
      await nowhere.close();
    }
  });

  it('a quick command\'s output and status arrive even when it ended before the CLI saw the session ready', async () => {
    // The portal starts the program as soon as the container exists; `echo` may be done before the
    // CLI's first poll sees `waiting_for_client` (about one run in ten here), which once made it a failure.
    for (let i = 0; i < 12; i++) {
      const r = await essh(['ssh', tenant.app, '--', 'sh', '-c', `echo quick-${i}; exit ${i % 3}`]);
      expect({ code: r.code, stdout: r.stdout.toString(), stderr: r.stderr.replace(/^Provisioning container for session \d+… ready in \d+\.\d s\n/, '') })
        .toEqual({ code: i % 3, stdout: `quick-${i}\n`, stderr: '' });
    }
  });

  it('-t asks for a TTY without a local terminal (its size 80x24, the local TERM)', async () => {
    // The pause: the portal sizes the exec's TTY just after starting it (Docker API 1.41 has no size at
    // exec creation), so a program's very first moment may see no size yet.
    const r = await essh(['ssh', '-t', tenant.app, '--', 'sh', '-c', 'tty; sleep 0.5; stty size; echo "TERM=$TERM"'], { env: { TERM: 'vt100' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r\n24 80\r\nTERM=vt100\r\n$/);
    // Without -t, the same has no TTY.
    const plain = await essh(['ssh', tenant.app, '--', 'sh', '-c', 'tty; true']);
    expect(plain.stdout.toString()).toBe('not a tty\n');
  });

  it('in a real terminal: -t with stdin from a pipe gets a TTY of the terminal\'s size; -T gets none', async () => {
    const forced = await esshScriptInTerminal(`echo | essh ssh -t ${q(tenant.app)} -- sh -c 'tty; sleep 0.5; stty size'`, { cols: 97, rows: 31 });
    await forced.waitForText(/^\/dev\/pts\/\d+\s*\n31 97\s*$/m);
    expect(await forced.exitStatus()).toBe(0);
    expect(await sttyModes('stty-after')).toBe(await sttyModes('stty-before'));

    const none = await esshScriptInTerminal(`essh ssh -T ${q(tenant.app)} -- sh -c 'tty; echo "stdin: $(cat)"'`);
    await none.waitForText(/^not a tty\s*$/m);
    // Not raw: the local terminal echoes and edits the line, and Ctrl-D ends the input.
    await none.typeLine('typed-here');
    await none.keys('C-d');
    await none.waitForText(/^stdin: typed-here\s*$/m);
    expect(await none.exitStatus()).toBe(0);
    expect(await sttyModes('stty-after')).toBe(await sttyModes('stty-before'));
  });
});

describe('essh session, sessions filters and --watch', () => {
  let ended: number;
  beforeAll(async () => {
    const r = await essh(['ssh', tenant.app, '--', 'sh', '-c', 'exit 3']);
    ended = sessionIdOf(r.stderr);
    await waitForState(stack, tenant.token, ended, 'ended', 20_000);
  });

  it('session ID shows one session, as text and as JSON', async () => {
    const text = await essh(['session', String(ended)]);
    expect(text.code, text.stderr).toBe(0);
    const out = text.stdout.toString();
    expect(out).toMatch(new RegExp(`^id:\\s+${ended}$`, 'm'));
    expect(out).toMatch(new RegExp(`^app:\\s+${tenant.app}$`, 'm'));
    expect(out).toMatch(/^state:\s+ended$/m);
    expect(out).toMatch(new RegExp(`^user:\\s+${tenant.user.name} <${tenant.user.email}>$`, 'm'));
    expect(out).toMatch(/^command:\s+sh -c exit 3$/m);
    expect(out).toMatch(/^end reason:\s+exit$/m);
    expect(out).toMatch(/^exit code:\s+3$/m);
    const json = JSON.parse((await essh(['session', String(ended), '--json'])).stdout.toString());
    expect(json).toEqual((await stack.api.get(`/sessions/${ended}`, tenant.token)).body);
    const missing = await essh(['session', '999999999999']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^essh: Session 999999999999 was not found/);
  });

  it('sessions filters by --state and --user (an id, an e-mail address, or me)', async () => {
    const ids = async (...args: string[]) => {
      const r = await essh(['sessions', '--json', ...args]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout.toString()) as { id: number; state: string; user: { id: number } }[]);
    };
    const endedOnes = await ids('--state', 'ended', '--app', tenant.app);
    expect(endedOnes.map((s) => s.id)).toContain(ended);
    expect(endedOnes.every((s) => s.state === 'ended')).toBe(true);
    expect((await ids('--state', 'active')).map((s) => s.id)).not.toContain(ended);
    for (const user of ['me', String(tenant.user.id), tenant.user.email]) {
      const mine = await ids('--user', user);
      expect(mine.map((s) => s.id), user).toContain(ended);
      expect(mine.every((s) => s.user.id === tenant.user.id)).toBe(true);
    }
    // The operator sees every user's sessions, and filters them to one.
    const other = await createTenant(stack, { plan: 'scale' });
    const theirs = await stack.api.post(`/apps/${other.app}/sessions`, other.token, {});
    const asOperator = (await essh(['sessions', '--json', '--user', other.user.email], { env: { ESSH_TOKEN: stack.adminToken } }));
    expect(JSON.parse(asOperator.stdout.toString()).map((s: { id: number }) => s.id)).toEqual([theirs.body.id]);
    await stack.api.post(`/sessions/${theirs.body.id}/terminate`, other.token, {});
  });

  it('--watch in a terminal redraws the table and shows a session go from active to ended; Ctrl-C ends it with 0', async () => {
    const term = await esshScriptInTerminal(`essh sessions --app ${q(tenant.app)} --watch --interval 0.5`, { cols: 160, rows: 40, jobControl: true });
    await term.waitForText(new RegExp(`^Every 0\\.5 s: essh sessions --app ${tenant.app} `, 'm'));
    const running = essh(['ssh', tenant.app, '--', 'sh', '-c', 'sleep 3']);
    const [, id] = await term.waitForText(new RegExp(`^(\\d+)\\s+${tenant.app}\\s+active\\s+${tenant.user.email}`, 'm'));
    expect((await running).code).toBe(0);
    await term.waitForText(new RegExp(`^${id}\\s+${tenant.app}\\s+ended\\s+${tenant.user.email}\\s+\\S+\\s+exit \\(0\\)\\s*$`, 'm'));
    await term.waitForText(new RegExp(`session ${id} \\(${tenant.app}, ${tenant.user.email}\\): (active|ending) → ended \\(exit 0\\)`));
    expect(await term.screen()).toMatch(new RegExp(`session ${id} \\(${tenant.app}, ${tenant.user.email}\\): (new, (provisioning|waiting_for_client|active)|\\w+ → active)`));
    await term.keys('C-c');
    expect(await term.exitStatus()).toBe(0);
    expect(await sttyModes('stty-after')).toBe(await sttyModes('stty-before'));
  });

  it('--watch --json without a terminal prints a line per change, following a session that leaves --state active', async () => {
    const child = spawn(process.execPath, [ESSH, 'sessions', '--state', 'active', '--user', 'me', '--watch', '--interval', '0.5', '--json'], {
      env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
    try {
      await sleep(1500); // its first list
      const running = essh(['ssh', tenant.app, '--', 'sh', '-c', 'sleep 2']);
      const lines = () => out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: number; state: string; end_reason: string | null });
      const active = await waitFor('an active session line', async () => lines().find((s) => s.state === 'active'), 20_000, 100);
      expect((await running).code).toBe(0);
      const last = await waitFor('its ended line', async () => lines().find((s) => s.id === active.id && s.state === 'ended'), 20_000, 100);
      expect(last).toMatchObject({ end_reason: 'exit', exit_code: 0 });
      expect(lines().filter((s) => s.id === active.id).map((s) => s.state).filter((s, i, a) => a.indexOf(s) === i).slice(-1)).toEqual(['ended']);
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    expect(err).toBe('');
  });
});

describe('essh recording', () => {
  let timed: number;
  let alt: number;
  beforeAll(async () => {
    const a = await essh(['ssh', '-t', tenant.app, '--', 'sh', '-c', 'echo first-mark; sleep 2; echo second-mark']);
    expect(a.code, a.stderr).toBe(0);
    timed = sessionIdOf(a.stderr);
    // The alternate screen and a hidden cursor, as a full-screen program leaves them while it runs.
    const b = await essh(['ssh', '-t', tenant.app, '--', 'sh', '-c', 'printf "\\033[?1049h\\033[?25l"; echo in-alt-mark; sleep 2; echo never-mark']);
    expect(b.code, b.stderr).toBe(0);
    alt = sessionIdOf(b.stderr);
    await waitForState(stack, tenant.token, alt, 'ended', 20_000);
  });

  it('writes the session\'s asciicast to stdout, byte for byte as the API serves it', async () => {
    const r = await essh(['recording', String(timed)]);
    expect(r.code, r.stderr).toBe(0);
    const api = await fetch(`${stack.url}/sessions/${timed}/recording`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(r.stdout.equals(Buffer.from(await api.arrayBuffer()))).toBe(true);
    const [header, ...events] = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l));
    expect(header).toMatchObject({ version: 2 });
    const output = events.filter((e: [number, string, string]) => e[1] === 'o').map((e: [number, string, string]) => e[2]).join('');
    expect(output).toMatch(/first-mark\r\nsecond-mark/);
    const missing = await essh(['recording', '999999999999']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^essh: Session 999999999999 was not found/);
  });

  it('--play shows the text at its timing (and faster with --speed), then gives the terminal back', async () => {
    const gap = async (extra: string) => {
      const term = await esshScriptInTerminal(`essh recording ${timed} --play ${extra}`);
      await term.waitForText(/first-mark/, 20_000);
      const first = Date.now();
      await term.waitForText(/second-mark/, 20_000);
      const ms = Date.now() - first;
      expect(await term.exitStatus()).toBe(0);
      expect(await sttyModes('stty-after')).toBe(await sttyModes('stty-before'));
      return ms;
    };
    const atTiming = await gap('');
    expect(atTiming).toBeGreaterThan(1600);
    expect(atTiming).toBeLessThan(3500);
    const fast = await gap('--speed 4');
    expect(fast).toBeLessThan(1200);
  });

  it('Ctrl-C stops --play and restores the terminal: its modes, the main screen, a visible cursor', async () => {
    const term = await esshScriptInTerminal(`essh recording ${alt} --play --speed 0.1`);
    await term.waitForText(/in-alt-mark/, 20_000);
    const flags = async () => (await term.tmux('display-message', '-p', '-t', 'main', '#{alternate_on} #{cursor_flag}')).stdout.trim();
    expect(await flags()).toBe('1 0');
    const { stdout: during } = await run('stty', ['-a', '-F', await term.paneTty()]);
    expect(during).toMatch(/ -icanon /);
    expect(during).toMatch(/ -echo /);
    await term.keys('C-c');
    expect(await term.exitStatus()).toBe(0);
    expect(await flags()).toBe('0 1');
    expect(await term.screen()).not.toContain('never-mark');
    expect(await sttyModes('stty-after')).toBe(await sttyModes('stty-before'));
  });
});

describe('one version', () => {
  it('the API\'s /healthz and OpenAPI document carry package.json\'s version, as essh --version does', async () => {
    const { version } = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
    expect((await stack.api.get('/healthz')).body.version).toBe(version);
    expect((await stack.api.get('/openapi.json')).body.info.version).toBe(version);
    expect((await essh(['--version'])).stdout.toString().trim()).toBe(version);
  });
});
