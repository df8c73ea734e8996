// bin/essh.js runs the CLI from a bundle it builds and caches in node_modules/.cache (with a V8 code
// cache): a checkout must never run stale code. Here a copy of the CLI's sources, with its own
// node_modules folder (links to the real packages, so the cache is its own), is edited right after each
// run, and the next run must show the edit. And `essh` as the README puts it on PATH (bin/essh, a shell
// launcher that keeps NODE_EXTRA_CA_CERTS from node, see there) runs, from PATH and through a link as
// npm link makes. And ssh2 as `essh ssh` loads it, from a bundle of its own, works with its native parts.
import { cp, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { runToEnd } from './support/portal-terminal.js';

let checkout: string;

beforeAll(async () => {
  checkout = await mkdtemp(path.join(os.tmpdir(), 'essh-cli-bundle-'));
  for (const part of ['bin', 'cli', 'lib', 'portal', 'shapes', 'package.json', 'tsconfig.json']) {
    await cp(path.join(projectRoot, part), path.join(checkout, part), { recursive: true });
  }
  await mkdir(path.join(checkout, 'node_modules'));
  for (const name of await readdir(path.join(projectRoot, 'node_modules'))) {
    if (name !== '.cache') await symlink(path.join(projectRoot, 'node_modules', name), path.join(checkout, 'node_modules', name));
  }
});
afterAll(async () => {
  if (checkout) await rm(checkout, { recursive: true, force: true });
});

async function essh(...args: string[]) {
  const r = await runToEnd(process.execPath, [path.join(checkout, 'bin', 'essh.js'), ...args], { timeoutMs: 60_000 });
  expect(r.stderr, 'essh wrote to stderr').toBe('');
  expect(r.code).toBe(0);
  return r.stdout.toString();
}

async function edit(file: string, from: string, to: string) {
  const full = path.join(checkout, file);
  const text = await readFile(full, 'utf8');
  expect(text).toContain(from);
  await writeFile(full, text.replace(from, to));
}

const bundleText = () => readFile(path.join(checkout, 'node_modules', '.cache', 'essh-cli', 'main.cjs'), 'utf8');

it('runs an edited source on the very next start, from a rebuilt bundle, however soon after the last', async () => {
  const { version } = JSON.parse(await readFile(path.join(checkout, 'package.json'), 'utf8')) as { version: string };
  expect((await essh('--version')).trim()).toBe(version);
  // Twice: the second start runs the cached bundle with the code cache the first one wrote.
  expect((await essh('--version')).trim()).toBe(version);
  const cacheFiles = await readdir(path.join(checkout, 'node_modules', '.cache', 'essh-cli'));
  expect(cacheFiles.filter((f) => f.endsWith('.v8cache'))).toHaveLength(1);

  await edit('cli/main.ts', ".name('essh')", ".name('essh-edited')");
  expect(await essh('--help')).toMatch(/^Usage: essh-edited /);
  expect(await bundleText()).toContain('essh-edited');

  await edit('package.json', `"version": "${version}"`, '"version": "9.9.9-edited"');
  expect((await essh('--version')).trim()).toBe('9.9.9-edited');

  // A file the CLI imports indirectly (cli/api.ts through main.ts), edited twice in a row.
  await edit('lib/version.ts', 'export const VERSION: string = pkg.version;', "export const VERSION: string = pkg.version + '+a';");
  expect((await essh('--version')).trim()).toBe('9.9.9-edited+a');
  await edit('lib/version.ts', "pkg.version + '+a'", "pkg.version + '+b'");
  expect((await essh('--version')).trim()).toBe('9.9.9-edited+b');
  expect(await bundleText()).toContain("+b");
  // At most one code cache, the current bundle's: the old ones went with their bundles. (None when the
  // last start ran through tsx: an edit less than the file clock's 100 ms margin before a build makes
  // the new bundle count as stale, which is the never-stale rule working.)
  const after = await readdir(path.join(checkout, 'node_modules', '.cache', 'essh-cli'));
  expect(after.filter((f) => f.endsWith('.v8cache')).length).toBeLessThanOrEqual(1);
});

describe('essh on PATH (bin/essh)', () => {
  const onPath = (dirOnPath: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const e: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirOnPath}${path.delimiter}${process.env.PATH}`, NODE_OPTIONS: '', ...env };
    delete e.NODE_EXTRA_CA_CERTS;
    Object.assign(e, env);
    // The path execvp would find on that PATH (a bare `essh` would be taken for a system program).
    return runToEnd(path.join(dirOnPath, 'essh'), args, { env: e, timeoutMs: 60_000 });
  };

  it('runs as `essh` from the checkout\'s bin/, and through a symbolic link to it in another folder', async () => {
    // The version the CLI's JavaScript entry prints in this checkout (edited by the test above).
    const version = await essh('--version');
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    const direct = await onPath(path.join(checkout, 'bin'), ['--version']);
    expect(direct.stderr).toBe('');
    expect(direct.code).toBe(0);
    expect(direct.stdout.toString()).toBe(version);

    const globalBin = path.join(checkout, 'global-bin');
    await mkdir(globalBin);
    await symlink(path.join(checkout, 'bin', 'essh'), path.join(globalBin, 'essh'));
    const linked = await onPath(globalBin, ['help']);
    expect(linked.code, linked.stderr).toBe(0);
    expect(linked.stdout.toString()).toMatch(/^Usage: essh(-edited)? /);
  });

  // Node 20 reads NODE_EXTRA_CA_CERTS before any JavaScript runs and warns at once when it cannot; the
  // launcher hands it to the CLI instead, which reads it on its first HTTPS request (test/tls-proxy.test.ts
  // trusts a CA that way), so a command that makes none never reads it.
  it('keeps NODE_EXTRA_CA_CERTS from node: a command without an HTTPS request never reads the file', async () => {
    const missing = path.join(checkout, 'no-such-ca.pem');
    const byNode = await runToEnd(process.execPath, ['-e', '0'], { env: { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: missing } });
    // Node 20 reads it at start (and warns at once); Node 24 reads it only when TLS first needs it.
    if (Number(process.versions.node.split('.')[0]) <= 20) expect(byNode.stderr).toContain(`Ignoring extra certs from \`${missing}\``);
    const r = await onPath(path.join(checkout, 'bin'), ['--version'], { NODE_EXTRA_CA_CERTS: missing });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

// What `essh ssh` gets for require('ssh2'): the bundle bin/essh.js builds of ssh2 and its dependencies,
// run through a code cache. Its native addons must come from node_modules (esbuild leaves their paths
// relative, which the launcher makes absolute), and an SSH handshake must work: a server and a client
// made from that bundle, on loopback, run a command. The fallback (ssh2 from node_modules) throws here.
it('loads ssh2 from its own bundle, native addons included, and an SSH exec works with it', async () => {
  const script = `
    const { requireSsh2 } = require(${JSON.stringify(path.join(checkout, 'bin', 'essh.js'))});
    const ssh2 = requireSsh2(() => { throw new Error('fell back to ssh2 from node_modules'); });
    const natives = Object.keys(require.cache).filter((k) => k.endsWith('.node'));
    const hostKey = ssh2.utils.generateKeyPairSync('ed25519').private;
    const server = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
      conn.on('authentication', (ctx) => (ctx.method === 'password' && ctx.password === 'pw' ? ctx.accept() : ctx.reject(['password'])));
      conn.on('ready', () => conn.on('session', (accept) => accept().on('exec', (acceptExec, _reject, info) => {
        const channel = acceptExec();
        channel.write('ran ' + info.command + '\\n');
        channel.exit(7);
        channel.end();
      })));
    });
    server.listen(0, '127.0.0.1', () => {
      const client = new ssh2.Client();
      client.on('ready', () => client.exec('true', (err, channel) => {
        if (err) throw err;
        let out = '';
        channel.on('data', (d) => (out += d));
        channel.on('exit', (code) => {
          process.stdout.write(JSON.stringify({ natives, out, code }));
          client.end();
          server.close();
        });
      }));
      client.connect({ host: '127.0.0.1', port: server.address().port, username: 'u', password: 'pw' });
    });
  `;
  for (const round of ['built', 'from its cache']) {
    const r = await runToEnd(process.execPath, ['-e', script], { timeoutMs: 60_000 });
    expect(r.stderr, round).toBe('');
    expect(r.code, round).toBe(0);
    const { natives, out, code } = JSON.parse(r.stdout.toString()) as { natives: string[]; out: string; code: number };
    expect(out).toBe('ran true\n');
    expect(code).toBe(7);
    // Where npm built them (the checkout's node_modules links to the project's packages).
    expect(natives.map((n) => n.split(`${path.sep}node_modules${path.sep}`).pop()).sort()).toEqual([
      'cpu-features/build/Release/cpufeatures.node',
      'ssh2/lib/protocol/crypto/build/Release/sshcrypto.node',
    ]);
  }
  const cacheFiles = await readdir(path.join(checkout, 'node_modules', '.cache', 'essh-cli'));
  expect(cacheFiles).toContain('ssh2.cjs');
  expect(cacheFiles.filter((f) => /^ssh2\..*\.v8cache$/.test(f))).toHaveLength(1);
});
