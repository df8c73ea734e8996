import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { RULE_LIMITS, presetLuhn, type RuleSpec } from './redaction.js';
import type { RedactionWindow } from './stream-redaction.js';

export type PoolRequest =
  | { kind: 'redact'; job: number; rules: RuleSpec[]; windows: RedactionWindow[] }
  | { kind: 'measure'; job: number; pattern: string; luhn: boolean };
export type RuleCost = { syntaxError: string } | { programSize: number; worstMs: number | null; matchesEmpty: boolean };
export type PoolResponse = { job: number } & (
  | { windows: string[][] }
  | { ruleFailure: { ruleId: number; message: string } }
  | { measure: RuleCost }
  | { error: string }
);
type PoolJob = PoolRequest extends infer R ? (R extends PoolRequest ? Omit<R, 'job'> : never) : never;
/** A job stopped because one window (or, at -1, compiling the rules) went past the budget, with the rule it was in. */
type Overrun = { job: number; overrun: { index: number; ruleId: number } };

interface Job {
  accountId: number;
  req: PoolRequest;
  budgetMs: number;
  resolve: (r: PoolResponse | Overrun) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  progress: Int32Array;
  startedAt: Float64Array;
  job?: Job;
}

/** Enough for one job to wait little behind another account's (a job takes at most its windows × budget). */
const JOB_CHARS = 32 * 1024;
const WATCH_MS = 20;
/**
 * The most wall time a text may take, however little CPU its worker gets meanwhile: 15 budgets, and
 * never under 30 s (a host loaded enough to starve its worker that long delays the account's output).
 */
const wallCapMs = (budgetMs: number) => Math.max(15 * budgetMs, 30_000);

/** A worker thread's CPU time in ms (Linux, clock ticks of 10 ms), by its thread id; NaN if it cannot be read. */
function threadCpuMs(tid: number): number {
  if (!tid) return NaN;
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // utime and stime (fields 14 and 15), counted after the command name's last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/**
 * A few worker threads that run the redaction rules (redaction/redaction-worker.ts), so that no rule can
 * hold up the event loop of the portal, the shipper or the API; they run at a lower CPU priority than
 * that event loop. Jobs wait in one queue per account and are taken in turn, one job per account at a
 * time, so one account's output or rules delay another's by one job at most. A text that
 * takes longer than its budget stops its worker (a fresh one replaces it): the job answers which text and
 * which rule.
 */
export class RedactionPool {
  private readonly slots: (Slot | undefined)[];
  private readonly queues = new Map<number, Job[]>();
  private turn: number[] = [];
  private jobs = 0;
  private watch?: NodeJS.Timeout;

  constructor(size = 2) {
    this.slots = new Array(size).fill(undefined);
  }

  run(accountId: number, req: PoolJob, budgetMs: number): Promise<PoolResponse | Overrun> {
    return new Promise((resolve, reject) => {
      const job: Job = { accountId, req: { ...req, job: ++this.jobs } as PoolRequest, budgetMs, resolve, reject };
      let q = this.queues.get(accountId);
      if (!q) {
        this.queues.set(accountId, (q = []));
        this.turn.push(accountId);
      }
      q.push(job);
      this.dispatch();
    });
  }

  /** Stops the workers (tests, shutdown); jobs still waiting fail. */
  async close(): Promise<void> {
    clearInterval(this.watch);
    this.watch = undefined;
    for (const q of this.queues.values()) for (const j of q) j.reject(new Error('the redaction pool was closed'));
    this.queues.clear();
    this.turn = [];
    await Promise.all(this.slots.map((s, i) => {
      this.slots[i] = undefined;
      s?.job?.reject(new Error('the redaction pool was closed'));
      return s?.worker.terminate();
    }));
  }

  private dispatch() {
    // Every worker is started with the first job (a start takes a second or more): another account's
    // first job should not wait for one.
    for (let i = 0; i < this.slots.length; i++) this.slots[i] ??= this.spawn(i);
    for (let i = 0; i < this.slots.length && this.turn.length; i++) {
      if (this.slots[i]?.job) continue;
      // One job per account at a time: an account's rules take one core at most, whatever they cost.
      const busy = new Set(this.slots.flatMap((s) => (s?.job ? [s.job.accountId] : [])));
      const next = this.turn.findIndex((a) => !busy.has(a));
      if (next < 0) break;
      const accountId = this.turn.splice(next, 1)[0]!;
      const slot = this.slots[i]!;
      const q = this.queues.get(accountId)!;
      const job = q.shift()!;
      if (q.length) this.turn.push(accountId);
      else this.queues.delete(accountId);
      slot.job = job;
      void slot.ready.then(() => {
        if (slot.job === job && this.slots[i] === slot) slot.worker.postMessage(job.req);
      });
    }
    if (!this.watch && this.slots.some((s) => s?.job)) {
      this.watch = setInterval(() => this.overruns(), WATCH_MS);
      this.watch.unref();
    }
  }

  /**
   * Stops each worker whose current text has taken more than its job's budget of CPU time, or, where that
   * cannot be read, of wall time. CPU time, because the workers run at a lower priority: on a loaded host
   * a text's wall time is mostly waiting for others' work, and going by it withheld the output of a rule
   * that had been measured and accepted, for load that was not its account's. A worker that gets almost
   * no CPU for long (wallCapMs) is stopped all the same: its account's output waits no longer.
   */
  private overruns() {
    const now = Date.now();
    this.slots.forEach((slot, i) => {
      const job = slot?.job;
      if (!slot || !job || Atomics.load(slot.progress, 0) !== job.req.job) return;
      const wallMs = now - slot.startedAt[0]!;
      if (wallMs <= job.budgetMs) return;
      const cpuMs = threadCpuMs(Atomics.load(slot.progress, 3)) - slot.startedAt[1]!;
      if (Number.isFinite(cpuMs) && cpuMs <= job.budgetMs && wallMs <= wallCapMs(job.budgetMs)) return;
      const overrun = { index: Atomics.load(slot.progress, 1), ruleId: Atomics.load(slot.progress, 2) };
      this.retire(i, slot);
      job.resolve({ job: job.req.job, overrun });
    });
    if (!this.slots.some((s) => s?.job)) {
      clearInterval(this.watch);
      this.watch = undefined;
    }
    this.dispatch();
  }

  private retire(i: number, slot: Slot) {
    if (this.slots[i] === slot) this.slots[i] = undefined;
    slot.job = undefined;
    void slot.worker.terminate();
  }

  private spawn(i: number): Slot {
    // progress: the job, the text's index, the rule's id, the thread's id; startedAt: wall and CPU ms.
    const progress = new Int32Array(new SharedArrayBuffer(4 * 4));
    const startedAt = new Float64Array(new SharedArrayBuffer(2 * 8));
    const worker = new Worker(new URL('./redaction-worker-entry.mjs', import.meta.url), {
      workerData: { progress: progress.buffer, startedAt: startedAt.buffer },
    });
    worker.unref();
    let ready!: () => void;
    const slot: Slot = { worker, progress, startedAt, ready: new Promise((r) => (ready = r)) };
    worker.on('message', (m: PoolResponse | { ready: true }) => {
      if ('ready' in m) return ready();
      const job = slot.job;
      if (!job || job.req.job !== m.job) return;
      slot.job = undefined;
      job.resolve(m);
      this.dispatch();
    });
    const fail = (err: Error) => {
      const job = slot.job;
      if (this.slots[i] === slot) this.slots[i] = undefined;
      slot.job = undefined;
      job?.reject(new Error(`a redaction worker stopped: ${err.message}`));
      this.dispatch();
    };
    worker.once('error', fail);
    worker.once('exit', (code) => {
      if (this.slots[i] === slot) fail(new Error(`exit code ${code}`));
    });
    return slot;
  }
}

let shared: RedactionPool | undefined;
/** The process's pool: the host's shipper, recordings and the API's rule checks share it. */
export function redactionPool(): RedactionPool {
  return (shared ??= new RedactionPool());
}

/** What stands in a drain event or a recording for output a rule took too long on: never the output itself. */
export function withheldText(ruleId: number, why: string) {
  return `[output withheld: redaction rule ${ruleId} ${why}]`;
}

/**
 * An account's redaction applied to texts: the rules are read from the database at most every couple of
 * seconds (a cheap list; the workers compile each rule once), the texts redacted in the pool. A text a
 * rule takes longer than the budget on is withheld (withheldText), and the rule's row says so for its
 * account's admins (status, last_error, withheld_records; a metric counts them).
 */
export class Redactor {
  private cache = new Map<number, { at: number; rules: Promise<RuleSpec[]> }>();

  constructor(
    private readonly db: Db,
    private readonly opts: { pool?: RedactionPool; ttlMs?: number; budgetMs?: number } = {},
  ) {}

  private get pool() {
    return this.opts.pool ?? redactionPool();
  }

  rulesFor(accountId: number): Promise<RuleSpec[]> {
    const hit = this.cache.get(accountId);
    if (hit && Date.now() - hit.at < (this.opts.ttlMs ?? 2000)) return hit.rules;
    const rules = this.db.selectFrom('redaction_rules').select(['id', 'pattern', 'replacement', 'preset'])
      .where('account_id', '=', accountId).orderBy('id').execute()
      .then((rows) => rows.map((r) => ({ id: Number(r.id), pattern: r.pattern, replacement: r.replacement, luhn: presetLuhn(r.preset) })));
    this.cache.set(accountId, { at: Date.now(), rules });
    // A failed read is not cached: the next look tries again.
    rules.catch(() => this.cache.delete(accountId));
    return rules;
  }

  /** The windows' pieces redacted with the account's rules (redaction/stream-redaction.ts); as they are when it has none. */
  async redact(accountId: number, windows: RedactionWindow[], rules?: RuleSpec[]): Promise<string[][]> {
    rules ??= await this.rulesFor(accountId);
    if (!rules.length || !windows.length) return windows.map((w) => w.pieces);
    const size = (w: RedactionWindow) => w.before.length + w.after.length + w.pieces.reduce((n, p) => n + p.length, 0);
    const out: string[][] = [];
    for (let from = 0; from < windows.length;) {
      let to = from;
      for (let chars = 0; to < windows.length && (to === from || chars + size(windows[to]!) <= JOB_CHARS); to++) chars += size(windows[to]!);
      out.push(...(await this.redactJob(accountId, rules, windows.slice(from, to))));
      from = to;
    }
    return out;
  }

  private async redactJob(accountId: number, rules: RuleSpec[], windows: RedactionWindow[]): Promise<string[][]> {
    if (!windows.length) return [];
    const budgetMs = this.opts.budgetMs ?? RULE_LIMITS.recordBudgetMs;
    const res = await this.pool.run(accountId, { kind: 'redact', rules, windows }, budgetMs);
    if ('windows' in res) return res.windows;
    if ('error' in res) throw new Error(`redaction failed: ${res.error}`);
    const withheld = (w: RedactionWindow, ruleId: number, why: string) => w.pieces.map(() => withheldText(ruleId, why));
    if ('ruleFailure' in res) {
      const { ruleId, message } = res.ruleFailure;
      await this.noteWithheld(ruleId, windows.length, `${message}; output it applies to is withheld until it is deleted`);
      return windows.map((w) => withheld(w, ruleId, 'is over the size limit'));
    }
    if (!('overrun' in res)) throw new Error('redaction: unexpected answer');
    const { index, ruleId } = res.overrun;
    const took = `took longer than ${budgetMs} ms`;
    const why = `${took} on output, which was withheld; make the pattern simpler (fewer and smaller repetitions) or delete it`;
    if (index < 0) {
      // Compiling the rules went past the budget: none of these can be redacted.
      await this.noteWithheld(ruleId, windows.length, why);
      return windows.map((w) => withheld(w, ruleId, took));
    }
    await this.noteWithheld(ruleId, 1, why);
    const [before, after] = await Promise.all([
      this.redactJob(accountId, rules, windows.slice(0, index)),
      this.redactJob(accountId, rules, windows.slice(index + 1)),
    ]);
    return [...before, withheld(windows[index]!, ruleId, took), ...after];
  }

  private async noteWithheld(ruleId: number, records: number, message: string) {
    await this.db.updateTable('redaction_rules').set((eb) => ({
      status: 'over_budget', last_error: message, last_error_at: nowIso(), withheld_records: eb('withheld_records', '+', records),
    })).where('id', '=', ruleId).execute();
  }

  /** What a new rule costs (its program size, its time on worst-case output), measured in the pool. */
  async measure(accountId: number, pattern: string, luhn: boolean): Promise<RuleCost | { overBudget: true }> {
    // Generous: compiling a pattern of the longest length takes well under a second even when it is refused.
    const res = await this.pool.run(accountId, { kind: 'measure', pattern, luhn }, 10 * RULE_LIMITS.recordBudgetMs);
    if ('measure' in res) return res.measure;
    if ('overrun' in res) return { overBudget: true };
    throw new Error(`measuring a redaction rule failed: ${'error' in res ? res.error : 'unexpected answer'}`);
  }
}
