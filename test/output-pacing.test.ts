// The portal's output scheduler (portal/output-pacing.ts) on a clock of the test's own: which streams
// wait, for how long, and the bound on what typing may take from bulk output. That it holds real
// output through the portal, losing nothing, is test/portal-fairness.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_OUTPUT_PACING, OutputPacing, type PacedStream } from '../portal/output-pacing.js';

const KB = 1024;

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

function pacing(limits: Partial<typeof DEFAULT_OUTPUT_PACING> = {}) {
  return new OutputPacing({ ...DEFAULT_OUTPUT_PACING, ...limits }, () => Date.now());
}

/** Output in 64 kB chunks until the stream counts as bulk. */
function printInBulk(stream: PacedStream) {
  for (let i = 0; i < 8; i++) stream.passed(64 * KB);
}

/** How long `stream` waits from now, on the fake clock (Infinity: not woken within 10 s). */
function waited(stream: PacedStream): number | null {
  const start = Date.now();
  let wokeAt: number | null = null;
  if (!stream.wait(() => (wokeAt = Date.now()))) return null;
  for (let t = 0; t < 10_000 && wokeAt === null; t++) vi.advanceTimersByTime(1);
  return wokeAt === null ? Infinity : wokeAt - start;
}

describe('output pacing', () => {
  it('a keystroke holds a stream printing in bulk until the window closes, and never a stream printing little', () => {
    const p = pacing();
    const typist = p.stream();
    const bulk = p.stream();
    const quiet = p.stream();
    printInBulk(bulk);
    quiet.passed(200 * KB);
    expect(bulk.wait(() => undefined), 'nobody typed').toBe(false);
    typist.received(1);
    expect(quiet.wait(() => undefined)).toBe(false);
    expect(waited(bulk)).toBe(DEFAULT_OUTPUT_PACING.interactiveMs);
    expect(bulk.holds).toBe(1);
    expect(bulk.wait(() => undefined), 'the window has closed').toBe(false);
  });

  it('the typing session\'s echo ends the window early', () => {
    const p = pacing();
    const typist = p.stream();
    const bulk = p.stream();
    printInBulk(bulk);
    typist.received(1);
    let wokeAt: number | null = null;
    const start = Date.now();
    expect(bulk.wait(() => (wokeAt = Date.now()))).toBe(true);
    vi.advanceTimersByTime(4);
    typist.passed(1);
    vi.advanceTimersByTime(DEFAULT_OUTPUT_PACING.afterAnswerMs);
    expect(wokeAt! - start).toBe(4 + DEFAULT_OUTPUT_PACING.afterAnswerMs);
  });

  it('input from a stream printing in bulk, or an upload, holds nobody', () => {
    const p = pacing();
    const uploader = p.stream();
    const bulk = p.stream();
    const other = p.stream();
    printInBulk(bulk);
    printInBulk(other);
    bulk.received(1);
    expect(other.wait(() => undefined), 'a keystroke in a session printing in bulk').toBe(false);
    uploader.received(64 * KB);
    expect(other.wait(() => undefined), 'an upload').toBe(false);
  });

  it('clients typing without end hold bulk output at most half of the time (plus one burst)', () => {
    const p = pacing();
    const typists = [p.stream(), p.stream(), p.stream()];
    const bulk = p.stream();
    const started = Date.now();
    let held = 0;
    while (Date.now() - started < 10_000) {
      for (const t of typists) t.received(1);
      printInBulk(bulk);
      const before = Date.now();
      let woke = false;
      if (bulk.wait(() => (woke = true))) {
        while (!woke) vi.advanceTimersByTime(1);
        held += Date.now() - before;
      } else {
        vi.advanceTimersByTime(1);
      }
    }
    const elapsed = Date.now() - started;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(elapsed * DEFAULT_OUTPUT_PACING.holdShare + DEFAULT_OUTPUT_PACING.holdBurstMs);
  });

  it('ESSH_PORTAL_INTERACTIVE_MS=0 turns it off', () => {
    const p = pacing({ interactiveMs: 0 });
    const typist = p.stream();
    const bulk = p.stream();
    printInBulk(bulk);
    typist.received(1);
    expect(bulk.wait(() => undefined)).toBe(false);
  });
});
