import { beforeAll, describe, expect, it } from 'vitest';
import { RecordType } from '../journal/format.js';
import { readRecords } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { createTenant, runInSession, useTestStack, waitFor } from './support/harness.js';

/**
 * Whatever bytes a session prints, its client gets them, its journal holds them and its recording is
 * served, on either database: a NUL (which PostgreSQL's text type refuses) and bytes that are not
 * UTF-8 must stop nothing.
 */

const stack = useTestStack();
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
});

describe('output bytes that are not text', () => {
  it(`a NUL and invalid UTF-8 reach the client, the journal and the recording, the lines after them too (${process.env.ESSH_TEST_DATABASE_URL ? 'PostgreSQL' : 'SQLite'})`, async () => {
    const r = await runInSession(stack, tenant, {
      command: ['sh', '-c', "printf 'before\\000after\\n'; printf '\\377\\376 not utf-8\\n'; echo last line; sleep 1; exit 0"],
      endTimeoutMs: 60_000,
    });
    const printed = Buffer.concat([Buffer.from('before\0after\n'), Buffer.from([0xff, 0xfe]), Buffer.from(' not utf-8\nlast line\n')]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.equals(printed), JSON.stringify(r.stdout.toString('latin1'))).toBe(true);
    const { id } = r;
    // The journal holds exactly those bytes.
    const journaled: Buffer[] = [];
    for await (const rec of readRecords(journalPath(stack.dataDir, id))) if (rec.type === RecordType.output) journaled.push(rec.payload);
    expect(Buffer.concat(journaled).equals(printed)).toBe(true);
    const text = await waitFor('the recording to hold the last line', async () => {
      const rec = await stack.api.get(`/sessions/${id}/recording`, tenant.token);
      return rec.status === 200 && typeof rec.body === 'string' && rec.body.includes('last line') ? rec.body : undefined;
    }, 30_000, 500);
    const output = text.split('\n').slice(1).filter(Boolean).map((l) => JSON.parse(l) as [number, string, string]).map((e) => e[2]).join('');
    // The NUL as it is (JSON carries it), each byte that is not UTF-8 as one U+FFFD.
    expect(output).toBe('before\u0000after\n\uFFFD\uFFFD not utf-8\nlast line\n');
  });
});
