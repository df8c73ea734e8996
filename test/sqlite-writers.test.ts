// Several processes write one SQLite file (hosts beside the API on one machine): a transaction that
// read before another process committed must wait for the write lock, not fail with "database is
// locked" (lib/db.ts, BEGIN IMMEDIATE). Before it, about 60 % of these transactions failed.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../lib/db.js';

const dir = mkdtempSync(path.join(tmpdir(), 'essh-sqlite-writers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SQLite shared by several processes', () => {
  it('read-then-write transactions from three processes at once all commit', async () => {
    const file = path.join(dir, 'essh.db');
    const db = openDatabase(`sqlite:${file}`);
    await sql`create table counter (n integer)`.execute(db);
    const rounds = 300;
    const writers = Array.from({ length: 3 }, () =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/support/sqlite-writers.ts', file, String(rounds)], { cwd: path.resolve(__dirname, '..') }));
    const outcomes = (await Promise.all(writers)).map((r) => JSON.parse(r.stdout) as { failed: number; firstError: string });
    expect(outcomes).toEqual(Array(3).fill({ failed: 0, firstError: '' }));
    const { n } = (await sql<{ n: number }>`select count(*) as n from counter`.execute(db)).rows[0]!;
    expect(Number(n)).toBe(3 * rounds);
    await db.destroy();
  }, 60_000);
});
