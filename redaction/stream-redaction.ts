/**
 * Redaction sees the session's output as one stream, not record by record: a secret printed in two
 * writes a second apart, or typed at a prompt and echoed a character at a time, is split over several
 * journal events, and each event is redacted with the text around it. Output that follows within
 * CARRY_MS of the previous byte continues the same run; a match is looked for up to CARRY_CHARS
 * characters across event boundaries within a run. An event is shipped (or recorded) only once what may
 * follow it is known: CARRY_CHARS of the run after it, or the end of its run (a pause of CARRY_MS, or
 * the session's end). Drains (drains/shipper.ts) and recordings (recordings/asciicast.ts) both cut their
 * windows here and redact them in the workers (redaction/redaction-pool.ts), so they show the same.
 */

/** The longest match looked for across events: longer secrets split between writes are not caught. */
export const CARRY_CHARS = 256;
/** A pause in output longer than this ends a run: what comes after is not joined to what came before. */
export const CARRY_MS = 1500;
/** Pieces are redacted this many characters at a time (plus their context). */
const WINDOW_CHARS = 32 * 1024;

/** An output event's text, with the times of its first and last byte. */
export interface Piece {
  text: string;
  time: number;
  lastTime: number;
}

/** What the workers redact: `pieces` come back redacted, each on its own; `before` and `after` are only context. */
export interface RedactionWindow {
  before: string;
  pieces: string[];
  after: string;
}

const continues = (a: Piece, b: Piece) => b.time - a.lastTime <= CARRY_MS;

/**
 * How many of the leading `pieces` can be redacted now: those followed, within their run, by CARRY_CHARS
 * or by the end of the run. `closed`: nothing will follow the last piece in its run (the session ended,
 * or its output paused longer than CARRY_MS: see `runClosed`).
 */
export function readyCount(pieces: Piece[], closed: boolean): number {
  let after = 0;
  let ready = pieces.length;
  for (let i = pieces.length - 1; i >= 0; i--) {
    const next = pieces[i + 1];
    if (next && !continues(pieces[i]!, next)) return ready; // i's run ends here: it and all before it are known
    if (!next && closed) return ready;
    if (after >= CARRY_CHARS) return ready;
    ready = i;
    after += pieces[i]!.text.length;
  }
  return ready;
}

/**
 * Whether the run of the journal's last output event is over: the session ended, or the output not yet
 * cut into an event (journal/reader.ts pendingFrom) starts after a pause, or nothing came for CARRY_MS
 * (and a margin for a record stamped before it was written).
 */
export function runClosed(last: Piece | undefined, o: { ended: boolean; pendingFrom: number | null; now: number }): boolean {
  if (o.ended || !last) return true;
  if (o.pendingFrom !== null) return o.pendingFrom - last.lastTime > CARRY_MS;
  return o.now - last.lastTime > CARRY_MS + 100;
}

/**
 * The windows that redact `pieces`: `before` are the pieces just before them (already redacted: context
 * only), `after` those just after (lookahead). Context is taken within the run only.
 */
export function redactionWindows(before: Piece[], pieces: Piece[], after: Piece[]): RedactionWindow[] {
  const all = [...before, ...pieces, ...after];
  const windows: RedactionWindow[] = [];
  for (let i = before.length; i < before.length + pieces.length;) {
    let j = i;
    for (let chars = 0; j < before.length + pieces.length && (j === i || chars + all[j]!.text.length <= WINDOW_CHARS); j++) chars += all[j]!.text.length;
    let back = '';
    for (let k = i - 1; k >= 0 && back.length < CARRY_CHARS && continues(all[k]!, all[k + 1]!); k--) back = all[k]!.text + back;
    let ahead = '';
    for (let k = j; k < all.length && ahead.length < CARRY_CHARS && continues(all[k - 1]!, all[k]!); k++) ahead += all[k]!.text;
    windows.push({ before: back.slice(-CARRY_CHARS), pieces: all.slice(i, j).map((p) => p.text), after: ahead.slice(0, CARRY_CHARS) });
    i = j;
  }
  return windows;
}

/** The last pieces of a run that the next window may need as context (at most CARRY_CHARS of them). */
export function contextTail(pieces: Piece[]): Piece[] {
  let chars = 0;
  let k = pieces.length;
  while (k > 0 && chars < CARRY_CHARS) {
    chars += pieces[k - 1]!.text.length;
    k--;
    if (k > 0 && !continues(pieces[k - 1]!, pieces[k]!)) break;
  }
  return pieces.slice(k);
}
