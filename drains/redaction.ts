import { RE2JS } from 're2js';
import type { Db } from '../lib/db.js';

/**
 * Redaction rules run over every byte of every session of their account, and account admins write
 * them: they run on RE2JS, a port of RE2 to JavaScript, whose matching time is linear in the text
 * whatever the pattern (no backtracking), so no rule can stall delivery for anyone. Patterns use RE2
 * syntax: no lookaround, no backreferences.
 */

/** Ready-made rules an account admin can switch on by name. */
export const REDACTION_PRESETS = {
  // 13–19 digits, optionally grouped by spaces or dashes; a Luhn check keeps ordinary long numbers.
  card_number: { pattern: String.raw`\b\d(?:[ -]?\d){12,18}\b`, replacement: '[REDACTED CARD]', luhn: true },
  us_ssn: { pattern: String.raw`\b\d{3}-\d{2}-\d{4}\b`, replacement: '[REDACTED SSN]', luhn: false },
} as const;
export type RedactionPreset = keyof typeof REDACTION_PRESETS;

/** The longest pattern (how many rules an account may have is in lib/caps.ts): each one costs every output event a pass. */
export const MAX_PATTERN_LENGTH = 1000;

export interface CompiledRule {
  regex: RE2JS;
  replacement: string;
  luhn: boolean;
}

/** An account's rules, with one pattern matching wherever any of them does: most text needs one pass. */
export interface RuleSet {
  rules: CompiledRule[];
  any: RE2JS | null;
}

export class RedactionPatternError extends Error {}

/** Compiles a rule, or throws a RedactionPatternError whose message says what is wrong with the pattern. */
export function compileRule(rule: { pattern: string; replacement: string; preset: string | null }): CompiledRule {
  const preset = rule.preset ? REDACTION_PRESETS[rule.preset as RedactionPreset] : undefined;
  let regex: RE2JS;
  try {
    regex = RE2JS.compile(rule.pattern);
  } catch (err) {
    throw new RedactionPatternError((err as Error).message.replace(/^error parsing regexp: /, ''));
  }
  return { regex, replacement: rule.replacement, luhn: preset?.luhn ?? false };
}

export function ruleSet(rules: CompiledRule[]): RuleSet {
  if (rules.length === 0) return { rules, any: null };
  if (rules.length === 1) return { rules, any: rules[0]!.regex };
  // Each rule compiled on its own first, so the union is valid too.
  return { rules, any: RE2JS.compile(rules.map((r) => `(?:${r.regex.pattern()})`).join('|')) };
}

export const NO_RULES: RuleSet = { rules: [], any: null };

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

function applyRule(text: string, r: CompiledRule): string {
  let out = '';
  let at = 0;
  for (const m of r.regex.matchAll(text)) {
    const found = m[0];
    if (found.length === 0) continue;
    if (r.luhn && !luhnValid(found)) continue;
    const index = m.index ?? 0;
    out += text.slice(at, index) + r.replacement;
    at = index + found.length;
  }
  return at === 0 ? text : out + text.slice(at);
}

/** The text with every rule applied in order; text no rule matches is returned as it is. */
export function redact(text: string, set: RuleSet | readonly CompiledRule[]): string {
  const s = Array.isArray(set) ? ruleSet(set as CompiledRule[]) : (set as RuleSet);
  if (!s.any || !s.any.test(text)) return text;
  let out = text;
  // A rule's test runs on RE2's DFA and costs little; finding where it matches costs more, so only
  // the rules that match at all are run for their matches.
  for (const r of s.rules) if (s.rules.length === 1 || r.regex.test(out)) out = applyRule(out, r);
  return out;
}

/**
 * Each account's compiled rules, re-read after a short time so that a new rule applies to output
 * within seconds without a query per event.
 */
export class RedactionRulesCache {
  private cache = new Map<number, { at: number; rules: Promise<RuleSet> }>();
  constructor(private readonly db: Db, private readonly ttlMs = 2000) {}

  rulesFor(accountId: number): Promise<RuleSet> {
    const hit = this.cache.get(accountId);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.rules;
    const rules = this.db
      .selectFrom('redaction_rules').select(['pattern', 'replacement', 'preset'])
      .where('account_id', '=', accountId).orderBy('id').execute()
      .then((rows) => ruleSet(rows.map((row) => {
        try {
          return compileRule(row);
        } catch (err) {
          // Stored before patterns had to be RE2 (a lookahead, say). Output must not leave unredacted:
          // delivery of the account waits, saying why, until the rule is fixed or deleted.
          throw new Error(`redaction rule "${row.pattern}" is not valid RE2 syntax (${(err as Error).message}); delete it and add it again in RE2 syntax`);
        }
      })));
    this.cache.set(accountId, { at: Date.now(), rules });
    // A failed read is not cached: the next look tries again.
    rules.catch(() => this.cache.delete(accountId));
    return rules;
  }
}
