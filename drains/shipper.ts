import { stat } from 'node:fs/promises';
import https from 'node:https';
import { createHash } from 'node:crypto';
import type { Selectable } from 'kysely';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { RecordType, type StartedDetails } from '../journal/format.js';
import { onJournalAppended } from '../journal/news.js';
import { JOURNAL_START, readEventChunks, readRecords, type JournalEvent, type JournalPosition } from '../journal/reader.js';
import { journalPath } from '../journal/writer.js';
import { bulkBody, esDocumentId, httpsBody, isoTime, sessionMeta, syslogFrames, type SessionMeta, type ShippedEvent } from './formats.js';
import { runPasses } from './passes.js';
import type { RuleSpec } from '../redaction/redaction.js';
import { Redactor } from '../redaction/redaction-pool.js';
import { CARRY_CHARS, contextTail, readyCount, redactionWindows, runClosed, type Piece } from '../redaction/stream-redaction.js';
import type { LogDrainsTable } from './tables.js';
import { isForbiddenTarget, targetHost } from './targets.js';
import { classifyStatus, httpsPost, syslogTlsSend, type Outcome } from './transports.js';

export interface ShipperSettings {
  /** Most events per delivery request. */
  batchEvents: number;
  /** Most bytes (roughly, of the request body) per delivery request. */
  batchBytes: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** How often an idle shipper looks for work that no wake-up announced (another process's appends). */
  pollMs: number;
  /** Drains may connect to loopback, private, link-local, CGNAT and metadata addresses. */
  allowPrivateTargets: boolean;
}

export const DEFAULT_SHIPPER_SETTINGS: ShipperSettings = {
  batchEvents: 20_000, batchBytes: 2 * 1024 * 1024, backoffBaseMs: 500, backoffCapMs: 60_000, pollMs: 1000, allowPrivateTargets: false,
};

/**
 * A partial line at a journal's end becomes an event once quiet for 600 ms (journal/reader.ts), and with
 * redaction rules an event waits for what follows it (redaction/stream-redaction.ts): look again this soon.
 */
const PARTIAL_LINE_RECHECK_MS = 250;
/** Building a batch gives the event loop back this often, so that one account's output (or rules) never holds up another's. */
const SLICE_MS = 8;
/** A backlog figure is written at most this often (and at once when it drops to zero). */
const BACKLOG_WRITE_MS = 1000;

type Drain = Omit<Selectable<LogDrainsTable>, 'id'> & { id: number; account_id: number; createdMs: number };

/** Full jitter (AWS architecture blog): a random wait up to a capped exponential, so that retries spread out. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

interface Deps {
  db: Db;
  log: Logger;
  secrets: SecretBox;
  /** This host: the shipper delivers the journals of the sessions that ran here. */
  hostId: string;
  /** Where this host's journals are (journal/writer.ts journalPath). */
  dataDir: string;
  settings?: Partial<ShipperSettings>;
}

/**
 * Delivers this host's session journals to the log drains of their accounts, at least once and in seq
 * order per session. Runs in every host process. Each drain with work here has a loop: read each
 * pending session's journal from the drain's committed cursor (drain_session_cursors), cut it into
 * events (journal/reader.ts, which gives the same events and seqs on every read), redact, send one
 * batch of up to a few MB, and commit the cursors only once the receiver accepted the batch or refused
 * it for good. Nothing but the cursors and the drain's figures goes to the database, once per batch.
 */
export class DrainShipper {
  private readonly loops = new Map<number, DrainLoop>();
  private readonly redactor: Redactor;
  private stopPasses?: () => void;
  private stopped = false;
  private scheduling: Promise<void> | null = null;
  private scheduleAgain = false;
  readonly settings: ShipperSettings;

  constructor(readonly deps: Deps) {
    this.settings = { ...DEFAULT_SHIPPER_SETTINGS, ...deps.settings };
    this.redactor = new Redactor(deps.db);
  }

  start(): void {
    this.stopPasses = runPasses(() => this.schedule(), this.settings.pollMs, () => onJournalAppended(() => this.wake()));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopPasses?.();
    await this.scheduling;
    await Promise.all([...this.loops.values()].map((l) => l.stop()));
    this.loops.clear();
  }

  /** Something was appended to a journal here: every loop looks at once, and drains without a loop are looked for. */
  wake(): void {
    for (const loop of this.loops.values()) loop.wake();
    this.schedule();
  }

  /** Starts a loop for every drain that has sessions to deliver on this host (one query for all drains). */
  private schedule(): void {
    if (this.stopped) return;
    if (this.scheduling) {
      this.scheduleAgain = true;
      return;
    }
    this.scheduling = (async () => {
      do {
        this.scheduleAgain = false;
        try {
          const rows = await this.deps.db.selectFrom('session_journals as sj')
            .innerJoin('log_drains as d', 'd.account_id', 'sj.account_id')
            .leftJoin('drain_session_cursors as c', (j) => j.onRef('c.drain_id', '=', 'd.id').onRef('c.operation_id', '=', 'sj.operation_id'))
            .select('d.id as drain_id').distinct()
            .where('sj.host_id', '=', this.deps.hostId).where('sj.deleted_at', 'is', null)
            .where('d.drain_ephemeral_sessions', '=', 1)
            .where((eb) => eb.or([eb('sj.ended_at', 'is', null), eb('sj.ended_at', '>=', eb.ref('d.created_at'))]))
            .where((eb) => eb.or([eb('c.done', 'is', null), eb('c.done', '=', 0)]))
            .execute();
          for (const r of rows) this.ensureLoop(Number(r.drain_id));
        } catch (err) {
          this.deps.log.warn({ err }, 'looking for log drain work failed');
        }
        // Don't look again more than every 50 ms, however many appends are announced.
        if (this.scheduleAgain && !this.stopped) await new Promise((r) => setTimeout(r, 50));
      } while (this.scheduleAgain && !this.stopped);
      this.scheduling = null;
    })();
  }

  private ensureLoop(id: number) {
    if (this.stopped || this.loops.has(id)) return;
    const loop = new DrainLoop(id, this.deps, this.settings, this.redactor, () => {
      if (this.loops.get(id) === loop) this.loops.delete(id);
    });
    this.loops.set(id, loop);
    loop.start();
  }
}

/** A pending session of a drain on this host, with where the drain's delivery of it stands. */
interface PendingSession {
  operationId: number;
  accountId: number;
  position: JournalPosition;
  file: string;
  /** Its journal has its `ended` record. */
  ended: boolean;
}

/** How far a batch takes one session, and which of its seqs it sends. */
interface SessionProgress {
  operationId: number;
  to: JournalPosition;
  done: boolean;
  firstSeq: number | null;
  lastSeq: number | null;
  sent: number;
}

interface Batch {
  events: ShippedEvent[];
  progress: Map<number, SessionProgress>;
  /** Computed once, so a retried batch carries the same key. */
  key: string;
  body?: Buffer;
  /** The batch stopped at a limit: more is probably waiting. */
  full: boolean;
}

class DrainLoop {
  private stopped = false;
  private running?: Promise<void>;
  private wakeSleep?: () => void;
  private woken = false;
  private readonly agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  private readonly metas = new Map<number, SessionMeta>();
  /** Per session, the output before the cursor at `seq` (redaction context, redaction/stream-redaction.ts). */
  private readonly contexts = new Map<number, { seq: number; pieces: Piece[] }>();
  /** A batch the receiver did not take yet: sent again as it is (same events, same Idempotency-Key). */
  private held?: Batch;
  private attempt = 0;
  /** Events per batch, halved on each 413 and doubled back after each success. */
  private limitEvents: number;
  private rotation = 0;
  private backlog = { bytes: -1, sessions: -1, writtenAt: 0 };

  constructor(
    private readonly id: number,
    private readonly deps: Deps,
    private readonly s: ShipperSettings,
    private readonly redactor: Redactor,
    private readonly onExit: () => void,
  ) {
    this.limitEvents = s.batchEvents;
  }

  private get log() {
    return this.deps.log;
  }

  start() {
    this.running = this.loop()
      .catch((err) => this.log.error({ err, drain: this.id }, 'drain loop stopped'))
      .finally(() => {
        this.agent.destroy();
        this.onExit();
      });
  }

  async stop() {
    this.stopped = true;
    this.agent.destroy(); // a request in flight fails now: its batch stays undelivered, not lost
    this.wake();
    await this.running;
  }

  wake() {
    this.woken = true;
    this.wakeSleep?.();
  }

  private sleep(ms: number) {
    if (this.woken || this.stopped) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((r) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        self.wakeSleep = undefined;
        self.woken = false;
        r();
      }
      this.wakeSleep = done;
    });
  }

  /** A receiver's Retry-After is honoured, but never beyond the backoff cap. */
  private retryPause(attempt: number, retryAfterMs: number | undefined) {
    const backoff = backoffDelay(attempt, this.s.backoffBaseMs, this.s.backoffCapMs);
    return Math.min(this.s.backoffCapMs, Math.max(retryAfterMs ?? 0, backoff));
  }

  private async loop() {
    while (!this.stopped) {
      let pause = 0;
      try {
        const drain = await this.loadDrain();
        if (!drain || !drain.drain_ephemeral_sessions) return await this.writeBacklog(0, 0);
        const sessions = await this.pendingSessions(drain);
        const sizes = await Promise.all(sessions.map((p) => stat(p.file).then((st) => st.size, () => 0)));
        await this.writeBacklog(
          sessions.reduce((sum, p, i) => sum + Math.max(0, sizes[i]! - p.position.fileOffset), 0), sessions.length,
        );
        if (!sessions.length) return;
        if (drain.status === 'paused') {
          // Nothing is sent and nothing dropped: the cursors stay until an admin resumes the drain.
          this.held = undefined;
          pause = this.s.pollMs;
        } else {
          let rules: RuleSpec[];
          try {
            rules = await this.redactor.rulesFor(drain.account_id);
          } catch (err) {
            throw new Error(`the account's redaction rules cannot be applied, so nothing is sent: ${(err as Error).message}`);
          }
          const built = this.held ? { batch: this.held, partial: false } : await this.build(drain, sessions, sizes, rules);
          if (!built.batch) pause = built.partial ? Math.min(this.s.pollMs, PARTIAL_LINE_RECHECK_MS) : this.s.pollMs;
          else pause = await this.sendAll(drain, sessions, rules, built.batch);
        }
      } catch (err) {
        this.attempt++;
        pause = backoffDelay(this.attempt, this.s.backoffBaseMs, this.s.backoffCapMs);
        this.log.warn({ err, drain: this.id }, 'log drain delivery pass failed');
        await this.recordError({ message: (err as Error).message }).catch(() => undefined);
      }
      if (!this.stopped && pause > 0) await this.sleep(pause);
    }
  }

  /**
   * Sends the batch and, while the receiver works on it, builds the next one from where it ends (a
   * full batch means more is waiting); the next is sent once the first is settled. Returns how long to
   * wait before the next pass.
   */
  private async sendAll(drain: Drain, sessions: PendingSession[], rules: RuleSpec[], first: Batch): Promise<number> {
    let batch: Batch | undefined = first;
    for (let sent = 0; batch && !this.stopped; sent++) {
      const current: Batch = batch;
      const sending = this.send(drain, current);
      let next: Promise<{ batch?: Batch; partial: boolean }> | undefined;
      if (current.full && sent < 50) {
        const after = sessions.flatMap((p) => {
          const progress = current.progress.get(p.operationId);
          if (!progress) return [p];
          return progress.done ? [] : [{ ...p, position: progress.to }];
        });
        next = Promise.all(after.map((p) => stat(p.file).then((st) => st.size, () => 0)))
          .then((sizes) => this.build(drain, after, sizes, rules));
        sessions = after;
      }
      const { wait, settled } = await sending;
      const built = await next?.catch(() => undefined);
      // The next batch starts where this one ends: it goes only if this one settled.
      if (!settled || !built?.batch) return wait;
      batch = built.batch;
    }
    return 0;
  }

  /** Sends a batch; `settled`: its cursors moved (delivered, or refused for good). */
  private async send(drain: Drain, batch: Batch): Promise<{ wait: number; settled: boolean }> {
    if (!batch.events.length) {
      // Only events from before the drain existed: the cursors move, nothing is sent.
      await this.settle(drain, batch, { kind: 'ok' });
      return { wait: 0, settled: true };
    }
    const outcome = await this.deliver(drain, batch);
    switch (outcome.kind) {
      case 'ok':
      case 'permanent':
        this.held = undefined;
        this.attempt = 0;
        await this.settle(drain, batch, outcome);
        this.limitEvents = Math.min(this.s.batchEvents, this.limitEvents * 2);
        return { wait: 0, settled: true };
      case 'too_large':
        this.held = undefined;
        if (batch.events.length > 1) {
          // Halve until it fits; the next pass builds the smaller batch from the same cursors.
          this.limitEvents = Math.max(1, Math.floor(batch.events.length / 2));
          this.log.info({ drain: this.id, events: this.limitEvents }, 'log drain answered 413: smaller batches');
          return { wait: 0, settled: false };
        }
        await this.settle(drain, batch, { ...outcome, kind: 'permanent', message: `${outcome.message}, even for a single event` });
        return { wait: 0, settled: true };
      case 'pause':
        this.held = undefined;
        await this.pause(outcome);
        return { wait: 0, settled: false };
      case 'retry':
        this.held = batch;
        this.attempt++;
        await this.recordError(outcome);
        return { wait: this.retryPause(this.attempt, outcome.retryAfterMs), settled: false };
    }
  }

  private async loadDrain(): Promise<Drain | undefined> {
    const row = await this.deps.db.selectFrom('log_drains').selectAll().where('id', '=', this.id).executeTakeFirst();
    if (!row) return undefined;
    return {
      ...row, id: Number(row.id), account_id: Number(row.account_id), createdMs: Date.parse(row.created_at),
      url: this.deps.secrets.open(row.url), token: row.token === null ? null : this.deps.secrets.open(row.token),
    };
  }

  /** The sessions on this host the drain takes and has not finished, oldest first. */
  private async pendingSessions(drain: Drain): Promise<PendingSession[]> {
    const rows = await this.deps.db.selectFrom('session_journals as sj')
      .leftJoin('drain_session_cursors as c', (j) => j.on('c.drain_id', '=', this.id).onRef('c.operation_id', '=', 'sj.operation_id'))
      .select(['sj.operation_id', 'sj.account_id', 'sj.ended_at', 'c.seq', 'c.file_offset', 'c.skip', 'c.output_offset'])
      .where('sj.host_id', '=', this.deps.hostId).where('sj.account_id', '=', drain.account_id).where('sj.deleted_at', 'is', null)
      .where((eb) => eb.or([eb('c.done', 'is', null), eb('c.done', '=', 0)]))
      // A session that ended before the drain existed is none of its business.
      .where((eb) => eb.or([eb('sj.ended_at', 'is', null), eb('sj.ended_at', '>=', drain.created_at)]))
      .orderBy('sj.operation_id')
      .execute();
    return rows.map((r) => ({
      operationId: Number(r.operation_id),
      accountId: Number(r.account_id),
      file: journalPath(this.deps.dataDir, Number(r.operation_id)),
      ended: r.ended_at !== null,
      position: r.seq === null ? JOURNAL_START : {
        seq: Number(r.seq), fileOffset: Number(r.file_offset), skip: Number(r.skip), outputOffset: Number(r.output_offset),
      },
    }));
  }

  /**
   * The next batch: events from each pending session in turn (starting with a different one each
   * time, so that one busy session cannot starve the others), up to the batch limits. `partial`: a
   * journal ends in output not yet cut into an event (a prompt), worth a look again soon.
   */
  private async build(drain: Drain, sessions: PendingSession[], sizes: number[], rules: RuleSpec[]): Promise<{ batch?: Batch; partial: boolean }> {
    const events: ShippedEvent[] = [];
    const progress = new Map<number, SessionProgress>();
    let bytes = 0;
    let full = false;
    let partial = false;
    let slice = performance.now();
    const start = this.rotation++ % sessions.length;
    for (let k = 0; k < sessions.length && !full && !this.stopped; k++) {
      const i = (start + k) % sessions.length;
      const s = sessions[i]!;
      if (sizes[i]! <= s.position.fileOffset) continue;
      const meta = await this.meta(s);
      // The journal starts just before the container is made: every event carries the container's id
      // once the session's record has it (a session whose container never came ends without one).
      if (meta.containerId === null && !s.ended) {
        partial = true;
        continue;
      }
      const p: SessionProgress = { operationId: s.operationId, to: s.position, done: false, firstSeq: null, lastSeq: null, sent: 0 };
      const taken: Exclude<JournalEvent, { kind: 'resize' }>[] = [];
      // With rules, what follows the last events taken is read too: redaction looks across events.
      const lookahead: Piece[] = [];
      let lookaheadChars = 0;
      let runEnded = false;
      let pendingFrom: number | null = null;
      const now = Date.now();
      reading: for await (const chunk of readEventChunks(s.file, s.position, { now, pendingFrom: (t) => (pendingFrom = t) })) {
        for (const ev of chunk) {
          if (ev.kind === 'resize') continue;
          if (!full) {
            taken.push(ev);
            if (ev.time < drain.createdMs) continue;
            bytes += (ev.kind === 'output' ? ev.data.length : 0) + meta.jsonFragment.length + 160;
            if (events.length + taken.length >= this.limitEvents || bytes >= this.s.batchBytes) {
              full = true;
              if (!rules.length) break reading;
            }
            continue;
          }
          if (ev.kind !== 'output') {
            runEnded = true;
            break reading;
          }
          lookahead.push(piece(ev));
          lookaheadChars += ev.data.length;
          if (lookaheadChars >= CARRY_CHARS) break reading;
        }
        if (performance.now() - slice > SLICE_MS) {
          await new Promise((r) => setImmediate(r));
          slice = performance.now();
        }
      }
      let kept = taken;
      let outputs: Piece[] = [];
      if (rules.length) {
        outputs = taken.flatMap((ev) => (ev.kind === 'output' ? [piece(ev)] : []));
        const following = [...outputs, ...lookahead];
        const closed = runEnded || taken.some((ev) => ev.kind === 'session_ended') ||
          (lookaheadChars < CARRY_CHARS && runClosed(following[following.length - 1], { ended: s.ended, pendingFrom, now }));
        const ready = readyCount(following, closed);
        if (ready < outputs.length) {
          // The rest waits until what follows it is known (at most CARRY_MS after its last byte).
          let n = 0;
          kept = taken.slice(0, taken.findIndex((ev) => ev.kind === 'output' && n++ === ready));
          outputs = outputs.slice(0, ready);
          partial = true;
        }
      }
      for (const ev of kept) {
        p.to = ev.next;
        if (ev.kind === 'session_ended') p.done = true;
        progress.set(s.operationId, p);
        // A new drain starts with the events that come after it was created.
        if (ev.time < drain.createdMs) continue;
        const e = shippedEvent(ev, meta);
        events.push(e);
        p.firstSeq ??= e.seq;
        p.lastSeq = e.seq;
        p.sent++;
      }
      if (rules.length && outputs.length) {
        // In the redaction workers, off this event loop (the portal's); without rules the bytes go as they are.
        const before = await this.context(s);
        const windows = redactionWindows(before, outputs, lookahead);
        const texts = (await this.redactor.redact(drain.account_id, windows, rules)).flat();
        const shipped = new Map(events.filter((e) => e.session.operationId === s.operationId && e.kind === 'output').map((e) => [e.seq, e]));
        kept.filter((ev) => ev.kind === 'output').forEach((ev, k) => {
          const e = shipped.get(ev.seq);
          if (e) e.text = texts[k]!;
        });
        this.contexts.set(s.operationId, { seq: p.to.seq, pieces: contextTail([...before, ...outputs]) });
      }
      if (!p.done && p.to.fileOffset < sizes[i]!) partial = true;
      if (p.done) {
        this.metas.delete(s.operationId);
        this.contexts.delete(s.operationId);
      }
    }
    if (!progress.size) return { partial };
    return { batch: { events, progress, key: idempotencyKey(this.id, progress), full }, partial };
  }

  /**
   * The output just before a session's cursor, the context its next events are redacted in: kept from
   * the batch before, else (after a restart) read again from the journal's start.
   */
  private async context(s: PendingSession): Promise<Piece[]> {
    const known = this.contexts.get(s.operationId);
    if (known?.seq === s.position.seq) return known.pieces;
    let pieces: Piece[] = [];
    if (s.position.seq === 0) return pieces;
    reading: for await (const chunk of readEventChunks(s.file, JOURNAL_START, { now: Date.now() })) {
      for (const ev of chunk) {
        if (ev.kind === 'resize') continue;
        if (ev.seq >= s.position.seq) break reading;
        if (ev.kind === 'output') pieces = contextTail([...pieces, piece(ev)]);
      }
    }
    return pieces;
  }

  /** What every event of the session carries: from its journal's `started` record, else from the database. */
  private async meta(s: PendingSession): Promise<SessionMeta> {
    const known = this.metas.get(s.operationId);
    if (known) return known;
    let started: StartedDetails | undefined;
    for await (const r of readRecords(s.file, 0)) {
      if (r.type === RecordType.started) started = JSON.parse(r.payload.toString('utf8')) as StartedDetails;
      break;
    }
    let meta: SessionMeta;
    if (started) {
      // The record is written before the container exists (provisioning): its id is in the operation.
      const containerId = started.container_id ?? (await this.deps.db.selectFrom('operations').select('container_id')
        .where('id', '=', s.operationId).executeTakeFirst())?.container_id ?? null;
      meta = sessionMeta({
        operationId: s.operationId, accountId: s.accountId, app: started.app, appId: started.app_id, account: started.account,
        userName: started.user.name, userEmail: started.user.email, containerId, host: this.deps.hostId,
      });
      // Not known yet: looked up again for the next batch.
      if (!containerId) return meta;
    } else {
      const op = await this.deps.db.selectFrom('operations as o')
        .innerJoin('apps as a', 'a.id', 'o.app_id').innerJoin('accounts as acc', 'acc.id', 'o.account_id').innerJoin('users as u', 'u.id', 'o.user_id')
        .select(['a.handle as app', 'a.id as app_id', 'acc.handle as account', 'u.name', 'u.email', 'o.container_id'])
        .where('o.id', '=', s.operationId).executeTakeFirstOrThrow();
      meta = sessionMeta({
        operationId: s.operationId, accountId: s.accountId, app: op.app, appId: Number(op.app_id), account: op.account,
        userName: op.name, userEmail: op.email, containerId: op.container_id, host: this.deps.hostId,
      });
    }
    this.metas.set(s.operationId, meta);
    return meta;
  }

  private async deliver(drain: Drain, batch: Batch): Promise<Outcome> {
    const allowPrivate = this.s.allowPrivateTargets;
    try {
      switch (drain.drain_type) {
        case 'https': {
          batch.body ??= httpsBody(batch.events);
          const res = await httpsPost(new URL(drain.url), batch.body, { 'content-type': 'application/json', 'idempotency-key': batch.key },
            drain.ca_cert, this.agent, allowPrivate);
          return classifyStatus(res.status, res.body, res.headers['retry-after']);
        }
        case 'syslog': {
          const u = new URL(drain.url);
          await syslogTlsSend({ host: targetHost(u), port: Number(u.port) }, batch.events.flatMap((e) => syslogFrames(e, drain.token)),
            drain.ca_cert, allowPrivate);
          return { kind: 'ok' };
        }
        case 'elasticsearch':
          return await this.deliverElasticsearch(drain, batch.events);
        default:
          return { kind: 'permanent', status: null, message: `unknown drain type ${drain.drain_type}` };
      }
    } catch (err) {
      if (isForbiddenTarget(err)) return { kind: 'pause', status: null, message: `the drain's address is refused: ${err.message}` };
      return { kind: 'retry', message: `cannot reach the drain: ${(err as Error).message}` };
    }
  }

  /**
   * `_bulk` answers 200 even when items fail, so each item is judged on its own: created or 409 (a
   * duplicate `create`: delivered before) settle; 429 and 5xx items are sent again, alone, until they
   * settle; any other item error is permanent.
   */
  private async deliverElasticsearch(drain: Drain, batch: ShippedEvent[]): Promise<Outcome> {
    const base = new URL(drain.url);
    const url = new URL(base.pathname.replace(/\/$/, '') + '/_bulk', base);
    url.username = base.username;
    url.password = base.password;
    if (drain.pipeline) url.searchParams.set('pipeline', drain.pipeline);
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    if (drain.token) headers.authorization = `ApiKey ${drain.token}`;
    let pending = batch;
    const refused: { event: ShippedEvent; status: number; reason: string }[] = [];
    for (let attempt = 0; pending.length && !this.stopped; attempt++) {
      let res;
      try {
        res = await httpsPost(url, bulkBody(pending, drain.index_pattern ?? 'essh-sessions'), headers, drain.ca_cert, this.agent, this.s.allowPrivateTargets);
      } catch (err) {
        if (attempt === 0 || isForbiddenTarget(err)) throw err;
        await this.recordError({ message: `cannot reach Elasticsearch: ${(err as Error).message}` });
        await this.sleep(backoffDelay(attempt, this.s.backoffBaseMs, this.s.backoffCapMs));
        continue;
      }
      const whole = classifyStatus(res.status, res.body, res.headers['retry-after']);
      if (whole.kind !== 'ok') {
        if (attempt === 0 || whole.kind !== 'retry') return whole;
        await this.recordError(whole);
        await this.sleep(this.retryPause(attempt, whole.retryAfterMs));
        continue;
      }
      let items: Record<string, { _id?: string; status: number; error?: unknown }>[];
      try {
        items = (JSON.parse(res.body) as { items?: typeof items }).items ?? [];
      } catch {
        return { kind: 'retry', message: 'Elasticsearch answered something that is not JSON', detail: res.body.slice(0, 300) };
      }
      if (items.length !== pending.length) return { kind: 'retry', message: `Elasticsearch answered ${items.length} items for ${pending.length} documents` };
      const again: ShippedEvent[] = [];
      items.forEach((item, i) => {
        const r = Object.values(item)[0]!;
        const event = pending[i]!;
        if ((r.status >= 200 && r.status < 300) || r.status === 409) return;
        if (r.status === 429 || r.status >= 500) again.push(event);
        else refused.push({ event, status: r.status, reason: JSON.stringify(r.error ?? {}).slice(0, 300) });
      });
      pending = again;
      if (pending.length) {
        await this.recordError({ message: `Elasticsearch asked to retry ${pending.length} of the documents (429/5xx)`, status: 429 });
        await this.sleep(backoffDelay(attempt + 1, this.s.backoffBaseMs, this.s.backoffCapMs));
      }
    }
    if (pending.length) return { kind: 'retry', message: 'stopped before Elasticsearch accepted every document' };
    if (refused.length) {
      const first = refused[0]!;
      return {
        kind: 'permanent', status: first.status,
        refused: refused.map((r) => ({ operationId: r.event.session.operationId, seq: r.event.seq })),
        message: `Elasticsearch refused ${refused.length} document(s), e.g. ${esDocumentId(first.event)}: HTTP ${first.status}`,
        detail: `${esDocumentId(first.event)}: ${first.reason}`,
      };
    }
    return { kind: 'ok' };
  }

  /**
   * Moves the cursors past the batch and counts it, in one transaction; a permanent refusal is
   * recorded in the same transaction, so it is never lost nor counted twice.
   */
  private async settle(drain: Drain, batch: Batch, outcome: Outcome) {
    const now = nowIso();
    const refused = outcome.kind === 'permanent'
      ? (outcome.refused ?? batch.events.map((e) => ({ operationId: e.session.operationId, seq: e.seq })))
      : [];
    await this.deps.db.transaction().execute(async (tx) => {
      for (const p of batch.progress.values()) {
        const values = {
          seq: p.to.seq, file_offset: p.to.fileOffset, skip: p.to.skip, output_offset: p.to.outputOffset, done: p.done ? 1 : 0, updated_at: now,
        };
        await tx.insertInto('drain_session_cursors').values({ drain_id: this.id, operation_id: p.operationId, ...values })
          .onConflict((oc) => oc.columns(['drain_id', 'operation_id']).doUpdateSet(values)).execute();
      }
      if (outcome.kind === 'permanent') {
        const bySession = new Map<number, number[]>();
        for (const r of refused) bySession.set(r.operationId, [...(bySession.get(r.operationId) ?? []), r.seq]);
        for (const [operationId, seqs] of bySession) {
          await tx.insertInto('log_drain_failures').values({
            drain_id: this.id, operation_id: operationId, first_seq: Math.min(...seqs), last_seq: Math.max(...seqs), events: seqs.length,
            status: outcome.status, message: outcome.message, detail: outcome.detail ?? null, at: now,
          }).execute();
        }
      }
      if (batch.events.length) {
        const delivered = batch.events.length - refused.length;
        await tx.updateTable('log_drains').set((eb) => ({
          delivered_events: eb('delivered_events', '+', delivered),
          failed_events: eb('failed_events', '+', refused.length),
          ...(delivered > 0 ? { last_success_at: now } : {}),
          ...(outcome.kind === 'permanent'
            ? { last_error: outcome.message, last_error_at: now, last_error_status: outcome.status, last_error_detail: outcome.detail ?? null }
            : {}),
        })).where('id', '=', this.id).execute();
      }
    });
    if (outcome.kind === 'permanent') {
      this.log.warn({ drain: this.id, status: outcome.status, events: refused.length }, 'a log drain refused events for good');
    }
  }

  private async recordError(e: { message: string; status?: number | null; detail?: string }) {
    await recordDrainError(this.deps.db, this.id, e);
  }

  private async pause(o: { message: string; status: number | null; detail?: string }) {
    await pauseDrain(this.deps.db, this.log, this.id, o);
  }

  /** This host's figure of what the drain has not received yet, for the API and /metrics. */
  private async writeBacklog(bytes: number, sessions: number) {
    const b = this.backlog;
    if (b.bytes === bytes && b.sessions === sessions) return;
    const now = Date.now();
    if (bytes !== 0 && b.bytes !== -1 && now - b.writtenAt < BACKLOG_WRITE_MS) return;
    const values = { backlog_bytes: bytes, backlog_sessions: sessions, updated_at: nowIso() };
    try {
      await this.deps.db.insertInto('drain_host_backlogs').values({ drain_id: this.id, host_id: this.deps.hostId, ...values })
        .onConflict((oc) => oc.columns(['drain_id', 'host_id']).doUpdateSet(values)).execute();
      Object.assign(b, { bytes, sessions, writtenAt: now });
    } catch (err) {
      // The drain was deleted meanwhile (the foreign key), or the database is busy: the next pass writes it.
      this.log.debug({ err, drain: this.id }, 'writing a drain backlog figure failed');
    }
  }
}

/** A delivery attempt failed and will be tried again: the drain shows why. */
export async function recordDrainError(db: Db, drainId: number, e: { message: string; status?: number | null; detail?: string }) {
  await db.updateTable('log_drains')
    .set({ last_error: e.message, last_error_at: nowIso(), last_error_status: e.status ?? null, last_error_detail: e.detail ?? null })
    .where('id', '=', drainId).execute();
}

/** The receiver refused our credentials or target: nothing is sent (nor dropped) until an admin resumes the drain. */
export async function pauseDrain(db: Db, log: Logger, drainId: number, o: { message: string; status: number | null; detail?: string }) {
  const now = nowIso();
  await db.updateTable('log_drains').set({
    status: 'paused', paused_reason: o.message, paused_at: now,
    last_error: o.message, last_error_at: now, last_error_status: o.status, last_error_detail: o.detail ?? null,
  }).where('id', '=', drainId).execute();
  log.warn({ drain: drainId, status: o.status }, 'log drain paused: the receiver refused our credentials or target; resume it once fixed');
}

/** The same events always carry the same key, so a receiver can drop a batch it already has. */
function idempotencyKey(drainId: number, progress: Map<number, SessionProgress>): string {
  const ranges = [...progress.values()].filter((p) => p.firstSeq !== null).map((p) => `${p.operationId}.${p.firstSeq}-${p.lastSeq}`);
  if (ranges.length <= 1) return `essh-drain-${drainId}-${ranges[0] ?? 'none'}`;
  return `essh-drain-${drainId}-${createHash('sha256').update(ranges.join(',')).digest('hex').slice(0, 32)}`;
}

function piece(ev: Extract<JournalEvent, { kind: 'output' }>): Piece {
  return { text: ev.data.toString('utf8'), time: ev.time, lastTime: ev.lastTime };
}

/** An event as shipped; an output event's text is its redacted text (build fills it in), null without rules. */
function shippedEvent(ev: Exclude<JournalEvent, { kind: 'resize' }>, meta: SessionMeta): ShippedEvent {
  const time = isoTime(ev.time);
  if (ev.kind === 'output') {
    // Without rules the bytes go as they are (formats.ts copies plain ASCII without decoding it).
    return { session: meta, seq: ev.seq, kind: 'output', stream: ev.stream, time, offset: ev.offset, text: null, data: ev.data };
  }
  return { session: meta, seq: ev.seq, kind: ev.kind, stream: 'lifecycle', time, offset: ev.offset, text: '', details: ev.details };
}
