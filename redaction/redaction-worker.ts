// A redaction worker thread (redaction/redaction-pool.ts starts it): compiles rules, applies them to texts,
// and times new rules. It writes where it is in shared memory, so that the pool, on the main thread,
// can see which record and which rule went past the budget and stop it.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import {
  RULE_LIMITS, RedactionPatternError, compileRule, redactWindow, ruleMatches, worstCaseTexts, type CompiledRule, type RuleSpec,
} from './redaction.js';
import type { PoolRequest, PoolResponse } from './redaction-pool.js';

const progress = new Int32Array(workerData.progress as SharedArrayBuffer);
const startedAt = new Float64Array(workerData.startedAt as SharedArrayBuffer);

/** Compiled rules by id and pattern: rules never change in place (a new pattern is a new rule). */
const compiled = new Map<string, CompiledRule | { tooLarge: string }>();
const MAX_CACHED = 2000;

function compiledRule(spec: RuleSpec): CompiledRule {
  const key = `${spec.id}\0${spec.pattern}\0${spec.replacement}`;
  let c = compiled.get(key);
  if (!c) {
    const rule = compileRule(spec);
    const size = rule.regex.programSize();
    // Rules stored before the limits existed are bounded here too.
    c = size > RULE_LIMITS.programSize
      ? { tooLarge: `it compiles to ${size} RE2 instructions, more than the ${RULE_LIMITS.programSize} allowed` }
      : rule;
    if (compiled.size >= MAX_CACHED) compiled.delete(compiled.keys().next().value!);
    compiled.set(key, c);
  }
  if ('tooLarge' in c) throw new RuleFailure(spec.id, c.tooLarge);
  return c;
}

class RuleFailure extends Error {
  constructor(readonly ruleId: number, message: string) {
    super(message);
  }
}

function handle(req: PoolRequest): PoolResponse {
  if (req.kind === 'redact') {
    const rules: CompiledRule[] = [];
    try {
      for (const spec of req.rules) {
        progress[1] = -1;
        progress[2] = spec.id;
        startedAt[0] = Date.now();
        startedAt[1] = threadCpuMs();
        rules.push(compiledRule(spec));
      }
    } catch (err) {
      const ruleId = err instanceof RuleFailure ? err.ruleId : progress[2]!;
      return { job: req.job, ruleFailure: { ruleId, message: (err as Error).message } };
    }
    const windows = req.windows.map((w, i) => {
      progress[1] = i;
      startedAt[0] = Date.now();
      startedAt[1] = threadCpuMs();
      return redactWindow(w, rules, (r) => (progress[2] = req.rules[r]!.id));
    });
    return { job: req.job, windows };
  }
  // measure: what a new rule costs, before it is stored.
  progress[1] = -1;
  progress[2] = 0;
  startedAt[0] = Date.now();
  startedAt[1] = threadCpuMs();
  let rule: CompiledRule;
  try {
    rule = compileRule({ pattern: req.pattern, replacement: '', luhn: req.luhn });
  } catch (err) {
    if (err instanceof RedactionPatternError) return { job: req.job, measure: { syntaxError: err.message } };
    throw err;
  }
  const programSize = rule.regex.programSize();
  if (programSize > RULE_LIMITS.programSize) return { job: req.job, measure: { programSize, worstMs: null, matchesEmpty: false } };
  const matchesEmpty = rule.regex.test('');
  // The better of two runs on each text: a pause for garbage collection or another process is not the rule's.
  let worstMs = 0;
  for (const text of worstCaseTexts(req.pattern)) {
    let best = Infinity;
    for (let run = 0; run < 2; run++) {
      const at = threadTimeMs();
      ruleMatches(text, rule);
      best = Math.min(best, threadTimeMs() - at);
    }
    worstMs = Math.max(worstMs, best);
  }
  return { job: req.job, measure: { programSize, worstMs, matchesEmpty } };
}

const threadStat = '/proc/thread-self/stat';
const ticksOf = (stat: string) => {
  // utime and stime (fields 14 and 15), counted after the command name's last ')' as in lib/handover.ts.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
};
const cpuTimeReadable = (() => {
  try {
    return Number.isFinite(ticksOf(readFileSync(threadStat, 'utf8')));
  } catch {
    return false;
  }
})();

/**
 * The CPU time this thread has used (Linux: in clock ticks of 10 ms, USER_HZ), else the wall time. A
 * rule's cost is the CPU it takes: this thread runs at a lower priority, and on a loaded machine its
 * wall time is mostly waiting for the others, which refused plain rules such as `tok_[a-z0-9]+`.
 */
function threadTimeMs(): number {
  return cpuTimeReadable ? ticksOf(readFileSync(threadStat, 'utf8')) * 10 : performance.now();
}

/** This thread's CPU time for the pool's watch (NaN where it cannot be read: the pool then goes by wall time). */
function threadCpuMs(): number {
  return cpuTimeReadable ? ticksOf(readFileSync(threadStat, 'utf8')) * 10 : NaN;
}

// The pool reads this thread's CPU time from /proc/self/task/<tid>/stat while a text runs here.
if (cpuTimeReadable) progress[3] = Number(readFileSync(threadStat, 'utf8').split(' ')[0]);

parentPort!.on('message', (req: PoolRequest) => {
  startedAt[0] = Date.now();
  startedAt[1] = threadCpuMs();
  progress[1] = -1;
  Atomics.store(progress, 0, req.job);
  let res: PoolResponse;
  try {
    res = handle(req);
  } catch (err) {
    res = { job: req.job, error: (err as Error).message };
  }
  Atomics.store(progress, 0, 0);
  parentPort!.postMessage(res);
});
// On Linux this is this thread's priority alone: the event loop that runs the portal comes first.
try {
  os.setPriority(10);
} catch {
  // not permitted here: the same priority, still off the event loop
}
// Warm before the first job: a cold engine is several times slower than the one records meet.
for (const pattern of ['\\b\\d(?:[ -]?\\d){12,18}\\b', 'tok_[a-z0-9]+', '(a+)+$']) {
  const rule = compileRule({ pattern, replacement: '', luhn: false });
  for (const text of worstCaseTexts(pattern)) ruleMatches(text.slice(0, 2048), rule);
}
parentPort!.postMessage({ ready: true });
