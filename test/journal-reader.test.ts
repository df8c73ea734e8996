// journal/reader.ts: the deterministic cutter every drain delivery and recording depends on. Journals
// are written here record by record with chosen timestamps, as the portal would append them.
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RecordType, encodeHeader, type OutputStream, type RecordTypeCode } from '../journal/format.js';
import { JOURNAL_START, MAX_EVENT_BYTES, readEvents, readRecords, type JournalEvent, type JournalPosition } from '../journal/reader.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'essh-journal-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const newFile = () => path.join(dir, `${++n}.journal`);

function append(file: string, type: RecordTypeCode, stream: OutputStream | null, time: number, payload: Buffer | string) {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  appendFileSync(file, Buffer.concat([encodeHeader(type, stream, time, body.length), body]));
}
const out = (file: string, time: number, text: string | Buffer, stream: OutputStream = 'stdout') => append(file, RecordType.output, stream, time, text);
const life = (file: string, type: RecordTypeCode, time: number, details: object) => append(file, type, null, time, JSON.stringify(details));

async function all(file: string, from: JournalPosition = JOURNAL_START, opts: { now?: number; resizes?: boolean } = {}) {
  const events: JournalEvent[] = [];
  for await (const e of readEvents(file, from, opts)) events.push(e);
  return events;
}
/** What an event is, without where reading resumes (compared across reads). */
const shape = (e: JournalEvent) => (e.kind === 'output'
  ? { kind: e.kind, seq: e.seq, stream: e.stream, time: e.time, offset: e.offset, data: e.data.toString('latin1') }
  : e.kind === 'resize' ? e : { kind: e.kind, seq: e.seq, time: e.time, offset: e.offset, details: e.details });
const outputs = (events: JournalEvent[]) => events.filter((e): e is Extract<JournalEvent, { kind: 'output' }> => e.kind === 'output');

const T = 1_700_000_000_000;

/** A journal with everything the cutter handles: lines split across chunks, prompts, long multibyte lines, stream switches, resizes. */
function richJournal(): string {
  const f = newFile();
  life(f, RecordType.started, T, { app: 'a' });
  append(f, RecordType.resize, null, T + 1, JSON.stringify({ cols: 120, rows: 40 }));
  out(f, T + 2, 'hello wor');
  out(f, T + 3, 'ld\nsecond line\nthird');
  out(f, T + 4, ' line\n$ ');
  out(f, T + 900, 'ls\r\nfile-a  file-b\r\n'); // after 896 ms of quiet: the prompt was an event of its own
  out(f, T + 901, 'err 1\n', 'stderr');
  out(f, T + 902, 'out after err');
  out(f, T + 903, ' / still\nend', 'stderr');
  out(f, T + 904, Buffer.from('€'.repeat(7000) + '\n')); // 21 001 bytes: cut at a character boundary
  append(f, RecordType.resize, null, T + 905, JSON.stringify({ cols: 80, rows: 24 }));
  out(f, T + 906, Buffer.from([0xe2, 0x82])); // a character split across two chunks
  out(f, T + 907, Buffer.from([0xac, 0x0a]));
  out(f, T + 908, Buffer.from('x'.repeat(MAX_EVENT_BYTES - 1) + '\n'));
  out(f, T + 909, 'tail without newline');
  life(f, RecordType.ended, T + 2000, { end_reason: 'exit', output_complete: true });
  return f;
}

describe('the journal reader', () => {
  it('cuts at newlines, at stream switches, after 500 ms of quiet, before lifecycle records; seqs and offsets follow', async () => {
    const f = richJournal();
    const events = await all(f);
    expect(events[0]).toMatchObject({ kind: 'session_started', seq: 0, offset: 0 });
    const texts = outputs(events).map((e) => [e.stream, e.data.toString('utf8')]);
    expect(texts.slice(0, 8)).toEqual([
      ['stdout', 'hello world\n'], ['stdout', 'second line\n'], ['stdout', 'third line\n'], ['stdout', '$ '],
      ['stdout', 'ls\r\n'], ['stdout', 'file-a  file-b\r\n'], ['stderr', 'err 1\n'], ['stdout', 'out after err'],
    ]);
    expect(texts[8]).toEqual(['stderr', ' / still\n']);
    expect(texts[texts.length - 1]).toEqual(['stdout', 'tail without newline']); // cut by the ended record
    const last = events[events.length - 1]!;
    expect(last).toMatchObject({ kind: 'session_ended', details: { end_reason: 'exit' } });
    // Seqs from 0 without gaps; offsets are the bytes of output before each event.
    const seqd = events.filter((e) => e.kind !== 'resize') as Exclude<JournalEvent, { kind: 'resize' }>[];
    expect(seqd.map((e) => e.seq)).toEqual(seqd.map((_, i) => i));
    let offset = 0;
    for (const e of outputs(events)) {
      expect(e.offset).toBe(offset);
      offset += e.data.length;
    }
    expect(last.kind !== 'resize' && last.offset).toBe(offset);
    // A resize cuts like a lifecycle record but is only an event for recordings.
    expect(events.some((e) => e.kind === 'resize')).toBe(false);
    expect((await all(f, JOURNAL_START, { resizes: true })).filter((e) => e.kind === 'resize').map((e) => e.kind === 'resize' && e.cols)).toEqual([120, 80]);
  });

  it('cuts a long line at 16 KiB on UTF-8 character boundaries, and the pieces join back exactly', async () => {
    const f = richJournal();
    const events = outputs(await all(f));
    const euros = events.filter((e) => e.data.length > 100 && e.data.includes(Buffer.from('€')));
    expect(euros.length).toBe(2);
    for (const e of events) expect(e.data.length).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    expect(euros[0]!.data.length).toBe(Math.floor(MAX_EVENT_BYTES / 3) * 3);
    for (const e of euros) expect(e.data.toString('utf8')).not.toContain('\uFFFD');
    expect(Buffer.concat(euros.map((e) => e.data)).toString('utf8')).toBe('€'.repeat(7000) + '\n');
    // A line of exactly 16 KiB with its newline is one event.
    expect(events.some((e) => e.data.length === MAX_EVENT_BYTES && e.data[e.data.length - 1] === 0x0a)).toBe(true);
    // A character whose bytes came in two chunks is in one event.
    expect(events.some((e) => e.data.toString('utf8') === '€\n')).toBe(true);
  });

  it('gives the same events, seqs and offsets when resumed from any event\'s next position', async () => {
    const f = richJournal();
    const events = await all(f);
    const seqd = events.filter((e) => e.kind !== 'resize') as Exclude<JournalEvent, { kind: 'resize' }>[];
    for (let i = 0; i < seqd.length; i++) {
      const rest = await all(f, seqd[i]!.next);
      expect(rest.map(shape), `resumed after seq ${seqd[i]!.seq}`).toEqual(seqd.slice(i + 1).map(shape));
    }
  });

  it('leaves a torn record at the end unread, and reads it once it is whole', async () => {
    const f = newFile();
    life(f, RecordType.started, T, {});
    out(f, T + 1, 'whole line\n');
    const payload = Buffer.from('torn line\n');
    const record = Buffer.concat([encodeHeader(RecordType.output, 'stdout', T + 2, payload.length), payload]);
    appendFileSync(f, record.subarray(0, 20)); // the header and 4 bytes of the payload
    const before = await all(f, JOURNAL_START, { now: T + 60_000 });
    expect(outputs(before).map((e) => e.data.toString())).toEqual(['whole line\n']);
    let records = 0;
    for await (const _ of readRecords(f)) records++;
    expect(records).toBe(2);
    const lastNext = (before[before.length - 1] as Extract<JournalEvent, { kind: 'output' }>).next;
    appendFileSync(f, record.subarray(20));
    const after = await all(f, lastNext, { now: T + 60_000 });
    expect(outputs(after).map((e) => [e.seq, e.data.toString()])).toEqual([[2, 'torn line\n']]);
    // A header alone is torn too.
    const g = newFile();
    out(g, T, 'a\n');
    appendFileSync(g, encodeHeader(RecordType.output, 'stdout', T + 1, 5).subarray(0, 7));
    expect(outputs(await all(g)).map((e) => e.data.toString())).toEqual(['a\n']);
  });

  it('cuts a partial line at the live end only well after 500 ms of quiet, so that a re-read gives the same events', async () => {
    const f = newFile();
    out(f, T, 'prompt$ ');
    expect(await all(f, JOURNAL_START, { now: T + 300 })).toEqual([]);
    // 500 ms have passed but not the margin: a chunk stamped before the reader looked may still come.
    expect(await all(f, JOURNAL_START, { now: T + 550 })).toEqual([]);
    out(f, T + 450, 'ls\n'); // stamped at T+450, appended only after the look at T+550
    const joined = outputs(await all(f, JOURNAL_START, { now: T + 10_000 }));
    expect(joined.map((e) => e.data.toString())).toEqual(['prompt$ ls\n']);

    const g = newFile();
    out(g, T, 'prompt$ ');
    const cut = outputs(await all(g, JOURNAL_START, { now: T + 650 }));
    expect(cut.map((e) => e.data.toString())).toEqual(['prompt$ ']);
    out(g, T + 700, 'ls\n');
    const resumed = outputs(await all(g, cut[0]!.next, { now: T + 10_000 }));
    const reread = outputs(await all(g, JOURNAL_START, { now: T + 10_000 }));
    // Read at once from the start, the journal gives the same two events the live reader gave.
    expect(reread.map(shape)).toEqual([...cut, ...resumed].map(shape));
    expect(reread.map((e) => e.data.toString())).toEqual(['prompt$ ', 'ls\n']);
  });

  it('has no events for a missing journal', async () => {
    expect(await all(path.join(dir, 'missing.journal'))).toEqual([]);
  });
});
