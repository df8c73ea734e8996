import { randomBytes } from 'node:crypto';
import https from 'node:https';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import type { Selectable } from 'kysely';
import type { LogDrainsTable } from './tables.js';
import { bulkBody, esDocumentId, jsonEvent, syslogFrames, type ShippedEvent } from './formats.js';
import { classifyStatus, httpsPost, syslogTlsSend, type Outcome } from './transports.js';

export interface ShipperSettings {
  /** Events per delivery request. */
  batchEvents: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** How often an idle drain looks for new events. */
  pollMs: number;
  /** A drain is shipped by one process at a time; a crashed one's lease runs out after this. */
  leaseMs: number;
}

export const DEFAULT_SHIPPER_SETTINGS: ShipperSettings = {
  batchEvents: 500, backoffBaseMs: 500, backoffCapMs: 60_000, pollMs: 200, leaseMs: 15_000,
};

type Drain = Omit<Selectable<LogDrainsTable>, 'id'> & { id: number };

/** Full jitter (AWS architecture blog): a random wait up to a capped exponential, so that retries spread out. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

/**
 * Delivers the session events to every drain, at least once and in order. Each drain has a committed
 * cursor into the shared `session_events` outbox and its own loop: read the next batch after the cursor,
 * send it, and move the cursor only once the receiver accepted it (or refused it for good, which is
 * recorded in `log_drain_failures`). Memory holds one batch per drain; the backlog stays in the database.
 */
export class DrainShipper {
  private readonly owner = `shipper-${randomBytes(6).toString('hex')}`;
  private readonly loops = new Map<number, DrainLoop>();
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly deps: { db: Db; log: Logger; secrets: SecretBox; settings?: Partial<ShipperSettings> },
  ) {}

  get settings(): ShipperSettings {
    return { ...DEFAULT_SHIPPER_SETTINGS, ...this.deps.settings };
  }

  start(): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all([...this.loops.values()].map((l) => l.stop()));
    this.loops.clear();
  }

  /** Starts a loop for each new drain and stops those of deleted ones. */
  private async refresh(): Promise<void> {
    if (this.stopped) return;
    try {
      const rows = await this.deps.db.selectFrom('log_drains').select('id').execute();
      const ids = new Set(rows.map((r) => Number(r.id)));
      for (const id of ids) {
        if (!this.loops.has(id)) {
          const loop = new DrainLoop(id, this.deps.db, this.deps.log, this.deps.secrets, this.settings, this.owner);
          this.loops.set(id, loop);
          loop.start();
        }
      }
      for (const [id, loop] of this.loops) {
        if (!ids.has(id)) {
          this.loops.delete(id);
          void loop.stop();
        }
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'listing log drains failed');
    }
  }
}

class DrainLoop {
  private stopped = false;
  private running?: Promise<void>;
  private wake?: () => void;
  private readonly agent = new https.Agent({ keepAlive: true, maxSockets: 1 });

  constructor(
    private readonly id: number,
    private readonly db: Db,
    private readonly log: Logger,
    private readonly secrets: SecretBox,
    private readonly s: ShipperSettings,
    private readonly owner: string,
  ) {}

  start() {
    this.running = this.loop().catch((err) => this.log.error({ err, drain: this.id }, 'drain loop stopped'));
  }

  async stop() {
    this.stopped = true;
    this.wake?.();
    await this.running;
    this.agent.destroy();
  }

  /** A receiver's Retry-After is honoured, but never beyond the backoff cap. */
  private retryPause(attempt: number, retryAfterMs: number | undefined) {
    const backoff = backoffDelay(attempt, this.s.backoffBaseMs, this.s.backoffCapMs);
    return Math.min(this.s.backoffCapMs, Math.max(retryAfterMs ?? 0, backoff));
  }

  private sleep(ms: number) {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  private async loop() {
    let attempt = 0;
    while (!this.stopped) {
      let pause = this.s.pollMs;
      try {
        const drain = await this.acquire();
        if (!drain) {
          pause = Math.max(this.s.pollMs, this.s.leaseMs / 3);
        } else {
          const batch = await this.nextBatch(drain);
          if (batch.length) {
            const outcome = await this.deliver(drain, batch);
            if (outcome.kind === 'retry') {
              attempt++;
              pause = this.retryPause(attempt, outcome.retryAfterMs);
              await this.recordError(outcome.message);
            } else {
              attempt = 0;
              await this.settle(drain, batch, outcome);
              pause = batch.length >= this.s.batchEvents ? 0 : this.s.pollMs;
            }
          }
        }
      } catch (err) {
        attempt++;
        pause = backoffDelay(attempt, this.s.backoffBaseMs, this.s.backoffCapMs);
        this.log.warn({ err, drain: this.id }, 'drain delivery pass failed');
      }
      if (!this.stopped && pause > 0) await this.sleep(pause);
    }
    await this.db.updateTable('log_drains').set({ lease_owner: null, lease_until: null })
      .where('id', '=', this.id).where('lease_owner', '=', this.owner).execute().catch(() => undefined);
  }

  /** Takes (or renews) this process's lease on the drain; undefined when another process holds it or the drain is gone. */
  private async acquire(): Promise<Drain | undefined> {
    const now = nowIso();
    const until = new Date(Date.now() + this.s.leaseMs).toISOString();
    const r = await this.db.updateTable('log_drains').set({ lease_owner: this.owner, lease_until: until })
      .where('id', '=', this.id)
      .where((eb) => eb.or([eb('lease_owner', 'is', null), eb('lease_owner', '=', this.owner), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return undefined;
    const row = await this.db.selectFrom('log_drains').selectAll().where('id', '=', this.id).executeTakeFirst();
    if (!row) return undefined;
    return {
      ...row, id: Number(row.id), cursor: Number(row.cursor), account_id: Number(row.account_id),
      url: this.secrets.open(row.url), token: row.token === null ? null : this.secrets.open(row.token),
    };
  }

  private async nextBatch(drain: Drain): Promise<ShippedEvent[]> {
    if (!drain.drain_ephemeral_sessions) return [];
    const rows = await this.db.selectFrom('session_events as e')
      .innerJoin('operations as o', 'o.id', 'e.operation_id')
      .innerJoin('apps as a', 'a.id', 'o.app_id')
      .innerJoin('accounts as acc', 'acc.id', 'o.account_id')
      .innerJoin('users as u', 'u.id', 'o.user_id')
      .select(['e.id', 'e.operation_id', 'e.seq', 'e.kind', 'e.stream', 'e.time', 'e.byte_offset', 'e.host', 'e.container_id', 'e.data',
        'a.handle as app', 'a.id as app_id', 'acc.handle as account', 'u.name as user_name', 'u.email as user_email'])
      .where('e.account_id', '=', drain.account_id)
      .where('e.id', '>', drain.cursor)
      .orderBy('e.id')
      .limit(this.s.batchEvents)
      .execute();
    return rows.map((r) => ({
      id: Number(r.id), operationId: Number(r.operation_id), seq: Number(r.seq), kind: r.kind, stream: r.stream, time: r.time,
      byteOffset: Number(r.byte_offset), host: r.host, containerId: r.container_id, data: r.data,
      app: r.app, appId: Number(r.app_id), account: r.account, userName: r.user_name, userEmail: r.user_email,
    }));
  }

  private async deliver(drain: Drain, batch: ShippedEvent[]): Promise<Outcome> {
    try {
      switch (drain.drain_type) {
        case 'https': return await this.deliverHttps(drain, batch);
        case 'syslog': {
          const u = new URL(drain.url);
          await syslogTlsSend({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) }, batch.flatMap((e) => syslogFrames(e, drain.token)), drain.ca_cert);
          return { kind: 'ok' };
        }
        case 'elasticsearch': return await this.deliverElasticsearch(drain, batch);
        default: return { kind: 'permanent', status: null, message: `unknown drain type ${drain.drain_type}` };
      }
    } catch (err) {
      return { kind: 'retry', message: `cannot reach the drain: ${(err as Error).message}` };
    }
  }

  private async deliverHttps(drain: Drain, batch: ShippedEvent[]): Promise<Outcome> {
    const body = JSON.stringify(batch.map(jsonEvent));
    // The same events always carry the same key, so a receiver can drop a batch it already has.
    const key = `essh-drain-${drain.id}-events-${batch[0]!.id}-${batch[batch.length - 1]!.id}`;
    const res = await httpsPost(new URL(drain.url), body, { 'content-type': 'application/json', 'idempotency-key': key }, drain.ca_cert, this.agent);
    return classifyStatus(res.status, res.body, res.headers['retry-after']);
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
        res = await httpsPost(url, bulkBody(pending, drain.index_pattern ?? 'essh-sessions'), headers, drain.ca_cert, this.agent);
      } catch (err) {
        if (attempt === 0) throw err;
        await this.recordError(`cannot reach Elasticsearch: ${(err as Error).message}`);
        await this.sleep(backoffDelay(attempt, this.s.backoffBaseMs, this.s.backoffCapMs));
        continue;
      }
      const whole = classifyStatus(res.status, res.body, res.headers['retry-after']);
      if (whole.kind !== 'ok') {
        if (attempt === 0 || whole.kind === 'permanent') return whole;
        await this.recordError(whole.message);
        await this.sleep(this.retryPause(attempt, whole.retryAfterMs));
        continue;
      }
      const items = (JSON.parse(res.body) as { items?: Record<string, { _id?: string; status: number; error?: unknown }>[] }).items ?? [];
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
        await this.recordError(`Elasticsearch asked to retry ${pending.length} of the documents (429/5xx)`);
        await this.sleep(backoffDelay(attempt + 1, this.s.backoffBaseMs, this.s.backoffCapMs));
      }
    }
    if (pending.length) return { kind: 'retry', message: 'stopped before Elasticsearch accepted every document' };
    if (refused.length) {
      const first = refused[0]!;
      return {
        kind: 'permanent', status: first.status, refusedIds: refused.map((r) => r.event.id),
        message: `Elasticsearch refused ${refused.length} document(s), e.g. ${esDocumentId(first.event)}: HTTP ${first.status} ${first.reason}`,
      };
    }
    return { kind: 'ok' };
  }

  /** Moves the cursor past the batch; a permanent refusal is recorded first, so it stays visible. */
  private async settle(drain: Drain, batch: ShippedEvent[], outcome: Outcome) {
    const last = batch[batch.length - 1]!.id;
    const now = nowIso();
    await this.db.transaction().execute(async (tx) => {
      if (outcome.kind === 'permanent') {
        const refused = outcome.refusedIds ?? batch.map((e) => e.id);
        await tx.insertInto('log_drain_failures').values({
          drain_id: drain.id, first_event_id: Math.min(...refused), last_event_id: Math.max(...refused), events: refused.length,
          status: outcome.status, message: outcome.message, at: now,
        }).execute();
        await tx.updateTable('log_drains').set((eb) => ({
          cursor: last,
          failed_events: eb('failed_events', '+', refused.length),
          delivered_events: eb('delivered_events', '+', batch.length - refused.length),
          last_error: outcome.message, last_error_at: now,
        })).where('id', '=', drain.id).where('lease_owner', '=', this.owner).execute();
      } else {
        await tx.updateTable('log_drains').set((eb) => ({
          cursor: last, delivered_events: eb('delivered_events', '+', batch.length), last_success_at: now,
        })).where('id', '=', drain.id).where('lease_owner', '=', this.owner).execute();
      }
    });
    if (outcome.kind === 'permanent') {
      this.log.warn({ drain: drain.id, status: outcome.status, events: batch.length }, 'a log drain refused a batch for good');
    }
  }

  private async recordError(message: string) {
    await this.db.updateTable('log_drains').set({ last_error: message, last_error_at: nowIso() })
      .where('id', '=', this.id).execute();
  }
}
