import type { Db } from '../lib/db.js';

/** Ready-made rules an account admin can switch on by name. */
export const REDACTION_PRESETS = {
  // 13–19 digits, optionally grouped by spaces or dashes; a Luhn check keeps ordinary long numbers.
  card_number: { pattern: String.raw`\b\d(?:[ -]?\d){12,18}\b`, replacement: '[REDACTED CARD]', luhn: true },
  us_ssn: { pattern: String.raw`\b\d{3}-\d{2}-\d{4}\b`, replacement: '[REDACTED SSN]', luhn: false },
} as const;
export type RedactionPreset = keyof typeof REDACTION_PRESETS;

export interface CompiledRule {
  regex: RegExp;
  replacement: string;
  luhn: boolean;
}

/** Compiles a rule, or throws an Error whose message says what is wrong with the pattern. */
export function compileRule(rule: { pattern: string; replacement: string; preset: string | null }): CompiledRule {
  const preset = rule.preset ? REDACTION_PRESETS[rule.preset as RedactionPreset] : undefined;
  return { regex: new RegExp(rule.pattern, 'gu'), replacement: rule.replacement, luhn: preset?.luhn ?? false };
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

export function redact(text: string, rules: readonly CompiledRule[]): string {
  let out = text;
  for (const r of rules) {
    r.regex.lastIndex = 0;
    out = out.replace(r.regex, (m) => (r.luhn && !luhnValid(m) ? m : r.replacement));
  }
  return out;
}

/**
 * Each account's compiled rules, re-read after a short time so that a new rule applies to running
 * sessions within seconds without a query per chunk of output.
 */
export class RedactionRulesCache {
  private cache = new Map<number, { at: number; rules: Promise<CompiledRule[]> }>();
  constructor(private readonly db: Db, private readonly ttlMs = 2000) {}

  rulesFor(accountId: number): Promise<CompiledRule[]> {
    const hit = this.cache.get(accountId);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.rules;
    const rules = this.db
      .selectFrom('redaction_rules').select(['pattern', 'replacement', 'preset'])
      .where('account_id', '=', accountId).orderBy('id').execute()
      .then((rows) => rows.map(compileRule));
    this.cache.set(accountId, { at: Date.now(), rules });
    // A failed read is not cached: the next chunk tries again.
    rules.catch(() => this.cache.delete(accountId));
    return rules;
  }
}
