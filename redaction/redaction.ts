import { RE2JS } from 're2js';
import type { RedactionPreset } from '../shapes/enumerations.js';

/**
 * Redaction rules run over every byte of every session of their account, and account admins write
 * them. They run on RE2JS, a port of RE2 to JavaScript: no backtracking, so matching time is linear in
 * the text. It is not linear in the rule: a counted repetition compiles to a copy of its body per count,
 * and matching costs up to (text × program size). So a rule is bounded when it is created (its program
 * size and its measured time on worst-case output, RULE_LIMITS), and matching runs in worker threads
 * with a time budget per record (redaction/redaction-pool.ts), never on the event loop that runs the
 * portal. Patterns use RE2 syntax: no lookaround, no backreferences. This file is what the workers run.
 */

/** The patterns of the ready-made rules an account admin can switch on by name. */
export const REDACTION_PRESETS: Record<RedactionPreset, { pattern: string; replacement: string; luhn: boolean }> = {
  // 13–19 digits, optionally grouped by spaces or dashes; a Luhn check keeps ordinary long numbers.
  card_number: { pattern: String.raw`\b\d(?:[ -]?\d){12,18}\b`, replacement: '[REDACTED CARD]', luhn: true },
  us_ssn: { pattern: String.raw`\b\d{3}-\d{2}-\d{4}\b`, replacement: '[REDACTED SSN]', luhn: false },
};

export const RULE_LIMITS = {
  /**
   * RE2's program size (instructions) a rule may compile to. Matching costs up to text × size: `\w{1000}`
   * (1 002) already takes about 0.5 s on 16 KB of letters, the issue's `(?:\S…\S){1000}` 490 002.
   */
  programSize: 600,
  /** The most a rule may take on WORST_CASE_BYTES of the output that keeps it busiest (measured at creation). */
  worstCaseMs: 250,
  /** What a record may take through all of an account's rules before it is withheld instead (the runtime bound). */
  recordBudgetMs: 2000,
} as const;
/** The size of the worst-case texts a new rule is timed on: a journal event's largest output (journal/reader.ts MAX_EVENT_BYTES). */
export const WORST_CASE_BYTES = 16 * 1024;

/** What the drains and recordings need of a rule; compiled only in the workers. */
export interface RuleSpec {
  id: number;
  pattern: string;
  replacement: string;
  luhn: boolean;
}

export interface CompiledRule {
  regex: RE2JS;
  replacement: string;
  luhn: boolean;
}

export class RedactionPatternError extends Error {}

/** Compiles a rule, or throws a RedactionPatternError whose message says what is wrong with the pattern. */
export function compileRule(rule: { pattern: string; replacement: string; luhn: boolean }): CompiledRule {
  let regex: RE2JS;
  try {
    regex = RE2JS.compile(rule.pattern);
  } catch (err) {
    throw new RedactionPatternError((err as Error).message.replace(/^error parsing regexp: /, ''));
  }
  return { regex, replacement: rule.replacement, luhn: rule.luhn };
}

export function presetLuhn(preset: string | null): boolean {
  return preset ? (REDACTION_PRESETS[preset as RedactionPreset]?.luhn ?? false) : false;
}

function luhnValid(candidate: string): boolean {
  const digits = candidate.replace(/\D/g, '');
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** Where the rule matches in the text (Luhn-checked for the card preset), left to right, not overlapping. */
export function ruleMatches(text: string, r: CompiledRule): { start: number; end: number }[] {
  const found: { start: number; end: number }[] = [];
  // A rule's test runs on RE2's DFA and costs little; finding where it matches costs more.
  if (!r.regex.test(text)) return found;
  for (const m of r.regex.matchAll(text)) {
    const s = m[0];
    if (s.length === 0 || (r.luhn && !luhnValid(s))) continue;
    const start = m.index ?? 0;
    found.push({ start, end: start + s.length });
  }
  return found;
}

/** The text with what any rule matches replaced; text no rule matches is returned as it is. */
export function redact(text: string, rules: readonly CompiledRule[]): string {
  return redactWindow({ before: '', pieces: [text], after: '' }, rules)[0]!;
}

/**
 * The window's pieces redacted as one text with their context (redaction/stream-redaction.ts): a match is
 * replaced where it starts, so a match that starts in one piece and goes on in the next shows its
 * replacement in the first and nothing in the next; a match starting in `before` was shown replaced
 * already. Overlapping matches of several rules are one: the earliest rule's replacement.
 */
export function redactWindow(
  w: { before: string; pieces: readonly string[]; after: string }, rules: readonly CompiledRule[], onRule?: (index: number) => void,
): string[] {
  const text = w.before + w.pieces.join('') + w.after;
  const found: { start: number; end: number; replacement: string }[] = [];
  rules.forEach((r, i) => {
    onRule?.(i);
    for (const m of ruleMatches(text, r)) found.push({ ...m, replacement: r.replacement });
  });
  if (!found.length) return [...w.pieces];
  found.sort((a, b) => a.start - b.start);
  const spans: typeof found = [];
  for (const m of found) {
    const last = spans[spans.length - 1];
    if (last && m.start < last.end) last.end = Math.max(last.end, m.end);
    else spans.push({ ...m });
  }
  let pieceStart = w.before.length;
  return w.pieces.map((piece) => {
    const pieceEnd = pieceStart + piece.length;
    let out = '';
    let at = pieceStart;
    for (const m of spans) {
      if (m.end <= pieceStart || m.start >= pieceEnd) continue;
      if (m.start >= pieceStart) out += text.slice(at, m.start) + m.replacement;
      at = Math.min(m.end, pieceEnd);
    }
    out += text.slice(at, pieceEnd);
    pieceStart = pieceEnd;
    return out;
  });
}

/**
 * Texts that keep a rule busiest: runs of one class of character (every `\S`, `\w`, `\d` or `.` stays
 * alive through them), printable ASCII in turn, and the pattern's own characters over and over (what its
 * literals match).
 */
export function worstCaseTexts(pattern: string): string[] {
  const fill = (unit: string) => unit.repeat(Math.ceil(WORST_CASE_BYTES / unit.length)).slice(0, WORST_CASE_BYTES);
  const printable = Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i)).join('');
  const literals = pattern.replace(/\\[a-zA-Z]|[\\()[\]{}|*+?^$.]/g, '');
  return [fill('a'), fill('7'), fill(printable), fill('a1 b2-c3_'), ...(literals ? [fill(literals)] : [])];
}
