import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { JournalHold } from '../journal/seal.js';

// Another host process (an upgrade's) sees this process's writers only by their mark on the data dir:
// the mark must stay while any writer of this process holds the journal.
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'essh-seal-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe("a journal's writer mark", () => {
  it('stays while another writer of the same process still holds the journal, and goes with the last', () => {
    const mark = path.join(dataDir, 'journal-locks', `41.w${process.pid}`);
    const attachment = new JournalHold(dataDir, 41);
    const forwardRecord = new JournalHold(dataDir, 41);
    expect(existsSync(mark)).toBe(true);
    forwardRecord.release();
    expect(existsSync(mark), 'the attachment still writes: its mark must stay').toBe(true);
    forwardRecord.release(); // twice is once
    expect(existsSync(mark)).toBe(true);
    attachment.release();
    expect(existsSync(mark)).toBe(false);
  });
});
