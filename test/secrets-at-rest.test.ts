import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { toolPath } from '../lib/config.js';
import { freeLoopbackPort } from '../lib/free-port.js';
import { newToken } from '../lib/secrets.js';
import { seedDemo } from '../server/seed.js';
import { startDevServer } from '../server/temporal-dev.js';
import { createTenant, runInSession, startTestStack, useTestStack, waitForState } from './support/harness.js';

/** Secrets at rest (docs/threat-model.md): what a copy of the database or a look at the data dir gives away. */

const stack = useTestStack();

describe("an app's environment", () => {
  it('is stored sealed, shown to its admins, and reaches the container; one stored in clear is sealed at the next start', async () => {
    const t = await createTenant(stack, { env: { DATABASE_URL: 'postgres://app:hunter2@db/app', APP_ENV: 'test' } });
    const row = await stack.runtime.db.selectFrom('apps').select(['id', 'env']).where('handle', '=', t.app).executeTakeFirstOrThrow();
    expect(row.env).toMatch(/^v2\./);
    expect(row.env).not.toContain('hunter2');
    expect((await stack.api.get(`/apps/${t.app}`, stack.adminToken)).body.env).toEqual({ DATABASE_URL: 'postgres://app:hunter2@db/app', APP_ENV: 'test' });
    expect((await stack.api.get(`/apps/${t.app}`, t.token)).body.env).toEqual({ DATABASE_URL: '[hidden]', APP_ENV: '[hidden]' });
    const r = await runInSession(stack, t, { command: ['sh', '-c', 'echo "$DATABASE_URL"'] });
    expect(r.stdout.toString()).toBe('postgres://app:hunter2@db/app\n');

    // An earlier version stored it in clear: the next start seals it.
    await stack.runtime.db.updateTable('apps').set({ env: JSON.stringify({ LEGACY: 'in-clear' }) }).where('id', '=', row.id).execute();
    const again = await startTestStack({ reuse: stack, parts: { api: true } });
    try {
      const sealed = await again.runtime.db.selectFrom('apps').select('env').where('id', '=', row.id).executeTakeFirstOrThrow();
      expect(sealed.env).toMatch(/^v2\./);
      expect((await again.api.get(`/apps/${t.app}`, stack.adminToken)).body.env).toEqual({ LEGACY: 'in-clear' });
    } finally {
      await again.runtime.stop();
    }
  });
});

describe('the data dir', () => {
  it("is essh's user's alone: the dir 0700, every file in it 0600 or stricter", async () => {
    // Something in every part of it: a session (journal), the portal's host key, the database.
    const t = await createTenant(stack);
    const r = await runInSession(stack, t, { command: ['true'] });
    await waitForState(stack, t.token, r.id, 'ended');
    expect((await stat(stack.dataDir)).mode & 0o777).toBe(0o700);
    const loose: string[] = [];
    const walk = async (dir: string) => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        const mode = (await stat(p)).mode & 0o777;
        if (e.isDirectory()) {
          if (mode & 0o077) loose.push(`${p} ${mode.toString(8)}`);
          await walk(p);
        } else if (mode & 0o077) loose.push(`${p} ${mode.toString(8)}`);
      }
    };
    await walk(stack.dataDir);
    expect(loose).toEqual([]);
    expect((await readdir(stack.dataDir)).length).toBeGreaterThan(2);
  });
});

describe('the databases', () => {
  const modes = async (file: string) => Object.fromEntries(await Promise.all(['', '-wal', '-shm'].map(async (suffix) =>
    [path.basename(file + suffix), ((await stat(file + suffix)).mode & 0o777).toString(8)])));

  it('essh.sqlite and temporal.sqlite, with their -wal and -shm, are 0600 under a permissive umask, and one an earlier version left 0644 is tightened', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-modes-'));
    const umask = process.umask(0o022);
    try {
      // The Temporal dev server writes its own file: started as `npm start` starts it, but from a
      // process whose umask lets others read what it makes.
      const temporalDb = path.join(dir, 'temporal.sqlite');
      const server = await startDevServer({
        binary: toolPath('temporal'), dataDir: dir, port: await freeLoopbackPort(), uiPort: await freeLoopbackPort(), namespace: 'default',
      });
      try {
        expect(await modes(temporalDb)).toEqual({ 'temporal.sqlite': '600', 'temporal.sqlite-wal': '600', 'temporal.sqlite-shm': '600' });
        expect(((await stat(path.join(dir, 'temporal.log'))).mode & 0o777).toString(8)).toBe('600');
      } finally {
        await server.stop();
      }

      // essh's database as an earlier version made it under that umask, then a stack started on it.
      const esshDb = path.join(dir, 'essh.sqlite');
      await writeFile(esshDb, '', { mode: 0o644 });
      for (const suffix of ['-wal', '-shm']) await writeFile(esshDb + suffix, '', { mode: 0o644 });
      const again = await startTestStack({ reuse: { dataDir: dir, databaseUrl: esshDb }, parts: { api: true } });
      try {
        expect((await again.api.get('/me', again.adminToken)).status).toBe(200);
        expect(await modes(esshDb)).toEqual({ 'essh.sqlite': '600', 'essh.sqlite-wal': '600', 'essh.sqlite-shm': '600' });
      } finally {
        await again.runtime.stop();
      }
    } finally {
      process.umask(umask);
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('ESSH_ADMIN_TOKEN', () => {
  it('is the operator token, and setting another one revokes the one before (and the generated one)', async () => {
    const me = async (token: string) => (await stack.api.get('/me', token)).status;
    // A fresh demo seed without ESSH_ADMIN_TOKEN generates an operator token into the data dir.
    await seedDemo(stack.runtime.db, stack.dataDir, stack.runtime.secrets);
    const generated = (await readFile(path.join(stack.dataDir, 'admin-token'), 'utf8')).trim();
    expect(await me(generated)).toBe(200);
    const first = newToken('essh');
    await seedDemo(stack.runtime.db, stack.dataDir, stack.runtime.secrets, first);
    expect(await me(first)).toBe(200);
    expect(await me(generated)).toBe(401);
    const second = newToken('essh');
    await seedDemo(stack.runtime.db, stack.dataDir, stack.runtime.secrets, second);
    expect(await me(second)).toBe(200);
    expect(await me(first)).toBe(401);
  });
});
