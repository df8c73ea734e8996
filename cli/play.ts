import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { CliError } from './config.js';

export interface PlayOptions {
  /** 2 plays twice as fast, 0.5 at half speed. */
  speed: number;
  /** Pauses longer than this many seconds are cut to it (asciinema's idle_time_limit); none: as recorded. */
  idleLimitS?: number;
}

// Sequences after which the terminal shows its alternate screen, and those that leave it.
const ALT_ENTER = /\x1b\[\?(?:1049|1047|47)h/g;
const ALT_LEAVE = /\x1b\[\?(?:1049|1047|47)l/g;

/**
 * Plays an asciicast v2 recording in this terminal at its timing, as `asciinema play` does: output
 * events are written when their time comes (divided by `speed`, long pauses cut to the idle limit).
 * Read as it arrives, so a long recording starts at once. In a terminal, stdin is in raw mode while
 * playing so typed keys do not scribble over the recording: space pauses and resumes, Ctrl-C or q
 * stops. However it ends (the end, Ctrl-C, q, SIGTERM/SIGHUP, an error), the terminal gets back its
 * modes, a visible cursor, plain attributes and its main screen. Resolves with the exit status: 0, or
 * 128+n after a signal.
 */
export async function playRecording(source: Readable, opts: PlayOptions): Promise<number> {
  const out = process.stdout;
  const stdin = process.stdin;
  const keys = Boolean(stdin.isTTY);
  const lines = readline.createInterface({ input: source, crlfDelay: Infinity })[Symbol.asyncIterator]();

  const first = await lines.next();
  let header: { version?: number; idle_time_limit?: number } = {};
  try {
    header = first.done ? {} : JSON.parse(first.value);
  } catch {
    /* handled below */
  }
  if (header.version !== 2) throw new CliError('this is not an asciicast v2 recording (its first line is no v2 header)');
  const idleLimit = opts.idleLimitS ?? (typeof header.idle_time_limit === 'number' ? header.idle_time_limit : Infinity);

  let altScreen = false;
  let stopped: number | undefined;
  let paused = false;
  let pausedAt = 0;
  let wake: () => void = () => undefined;
  const stop = (code: number) => {
    if (stopped === undefined) stopped = code;
    wake();
  };
  const onKey = (b: Buffer) => {
    for (const c of b) {
      if (c === 0x03 || c === 0x71 /* q */) return stop(0);
      if (c === 0x20) {
        paused = !paused;
        if (paused) pausedAt = performance.now();
        else {
          start += performance.now() - pausedAt;
          wake();
        }
      }
    }
  };
  const signals = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;
  const onSignal = (s: NodeJS.Signals) => stop(s === 'SIGINT' ? 0 : 128 + signals[s as keyof typeof signals]);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (keys) {
      stdin.setRawMode(false);
      stdin.off('data', onKey);
      stdin.pause();
    }
    if (out.isTTY) out.write((altScreen ? '\x1b[?1049l' : '') + '\x1b[0m\x1b[?25h');
  };
  process.on('exit', restore);
  for (const s of Object.keys(signals) as NodeJS.Signals[]) process.on(s, onSignal);
  if (keys) {
    stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.resume();
  }

  let start = performance.now();
  let at = 0; // the recording's time, with long pauses cut, in seconds
  let last = 0;
  try {
    // One read in flight at a time: a wake-up (a key, a signal) must not drop the line it raced with.
    let reading = lines.next();
    for (;;) {
      const next = await Promise.race([reading, new Promise<'woken'>((r) => (wake = () => r('woken')))]);
      if (stopped !== undefined) break;
      if (next === 'woken') continue;
      if (next.done) break;
      reading = lines.next();
      if (!next.value.trim()) continue;
      let event: [number, string, string];
      try {
        event = JSON.parse(next.value);
      } catch {
        throw new CliError('the recording has a line that is not JSON; it may be cut short');
      }
      const [time, type, data] = event;
      if (typeof time !== 'number' || typeof data !== 'string') continue;
      at += Math.min(Math.max(0, time - last), idleLimit);
      last = time;
      // Wait until the event's time comes (or a pause ends, or a stop).
      while (stopped === undefined) {
        const due = start + (at * 1000) / opts.speed - performance.now();
        if (!paused && due <= 0) break;
        await new Promise<void>((r) => {
          const timer = paused ? undefined : setTimeout(r, due);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
      }
      if (stopped !== undefined) break;
      if (type !== 'o') continue;
      out.write(data);
      const enters = [...data.matchAll(ALT_ENTER)].pop()?.index ?? -1;
      const leaves = [...data.matchAll(ALT_LEAVE)].pop()?.index ?? -1;
      if (enters !== leaves) altScreen = enters > leaves;
    }
  } finally {
    restore();
    process.off('exit', restore);
    for (const s of Object.keys(signals) as NodeJS.Signals[]) process.off(s, onSignal);
    lines.return?.();
    source.destroy();
  }
  return stopped ?? 0;
}
