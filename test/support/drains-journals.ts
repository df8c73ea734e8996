// Shipper-level test sessions: a stack host's data dir with real journals written by the real
// JournalWriter, the rows the provisioning and teardown activities write, and the real DrainShipper.
// (End-to-end sessions printing through the exec portal write the same records.)
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { nowIso } from '../../lib/db.js';
import { createLogger } from '../../lib/log.js';
import { loadSecretBox } from '../../lib/secrets.js';
import { announceJournalAppended } from '../../journal/news.js';
import { JournalWriter } from '../../journal/writer.js';
import type { EndedDetails, OutputStream } from '../../journal/format.js';
import { DrainShipper, type ShipperSettings } from '../../drains/shipper.js';
import type { TestStack } from './harness.js';

export interface Tenant {
  account: string;
  app: string;
  token: string;
  user: { id: number; email: string; name: string };
}

/** A stack host of the test: its id, its data dir of journals, and the shippers it runs. */
export class TestHost {
  readonly hostId = `test-host-${randomBytes(3).toString('hex')}`;
  private readonly shippers: DrainShipper[] = [];
  private constructor(readonly stack: TestStack, readonly dataDir: string) {}

  static async create(stack: TestStack): Promise<TestHost> {
    return new TestHost(stack, await mkdtemp(path.join(os.tmpdir(), 'essh-host-')));
  }

  /**
   * A running session of `tenant` on this host, with its `started` record written. `containerId`
   * null: as provisioning starts it, before its container exists (`TestSession.containerMade`).
   */
  async session(tenant: Tenant, opts: { maxBytes?: number; command?: string[]; containerId?: string | null } = {}): Promise<TestSession> {
    const { db } = this.stack.runtime;
    const acc = await db.selectFrom('accounts').select('id').where('handle', '=', tenant.account).executeTakeFirstOrThrow();
    const app = await db.selectFrom('apps').select('id').where('handle', '=', tenant.app).executeTakeFirstOrThrow();
    const now = nowIso();
    const containerId = opts.containerId === undefined ? randomBytes(32).toString('hex') : opts.containerId;
    const op = await db.insertInto('operations').values({
      type: 'execute', account_id: Number(acc.id), app_id: Number(app.id), user_id: tenant.user.id, stack: 'local',
      command: opts.command ? JSON.stringify(opts.command) : null, container_size_mb: 1024, state: 'active', status: 'running',
      end_reason: null, end_message: null, ended_by: null, exit_code: null, container_id: containerId, workflow_id: null,
      created_at: now, updated_at: now, connected_at: now, ended_at: null, expires_at: null,
    }).returning('id').executeTakeFirstOrThrow();
    const id = Number(op.id);
    await db.insertInto('session_journals').values({
      operation_id: id, account_id: Number(acc.id), host_id: this.hostId, created_at: now, ended_at: null, output_bytes: 0, truncated: 0, deleted_at: null,
    }).execute();
    const writer = JournalWriter.open(this.dataDir, id, { maxBytes: opts.maxBytes });
    writer.started({
      user: tenant.user, app: tenant.app, app_id: Number(app.id), account: tenant.account, container_size_mb: 1024,
      command: opts.command ?? null, container_id: containerId, created_at: now,
    });
    announceJournalAppended(id);
    return new TestSession(this, id, writer, Date.now());
  }

  /** A DrainShipper of this host on the stack's database (as a host process runs it). */
  async startShipper(settings: Partial<ShipperSettings> = {}): Promise<DrainShipper> {
    const shipper = new DrainShipper({
      db: this.stack.runtime.db,
      log: createLogger('warn'),
      secrets: await loadSecretBox({ dataDir: this.stack.dataDir }),
      hostId: this.hostId,
      dataDir: this.dataDir,
      settings: { backoffBaseMs: 200, backoffCapMs: 1000, pollMs: 300, allowPrivateTargets: true, ...settings },
    });
    shipper.start();
    this.shippers.push(shipper);
    return shipper;
  }

  /** Stops this host's shippers (a host process stopping or dying between two commits). */
  async stopShippers() {
    await Promise.all(this.shippers.splice(0).map((s) => s.stop()));
  }

  async stop() {
    await this.stopShippers();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** One session's journal, written as the portal (output, resizes) and teardown (ended) write it. */
export class TestSession {
  constructor(private readonly host: TestHost, readonly id: number, readonly writer: JournalWriter, private readonly startedAt: number) {}

  /** The container was made: the session's record has its id, as the workflow records it. */
  async containerMade(containerId = randomBytes(32).toString('hex')) {
    await this.host.stack.runtime.db.updateTable('operations').set({ container_id: containerId }).where('id', '=', this.id).execute();
    return containerId;
  }

  print(text: string | Buffer, stream: OutputStream = 'stdout') {
    this.writer.output(stream, typeof text === 'string' ? Buffer.from(text) : text);
    announceJournalAppended(this.id);
  }

  resize(cols: number, rows: number) {
    this.writer.resize({ cols, rows });
    announceJournalAppended(this.id);
  }

  async end(details: Partial<EndedDetails> = {}) {
    const ended: EndedDetails = {
      end_reason: 'exit', end_message: null, ended_by: null, exit_code: 0, duration_s: Math.round((Date.now() - this.startedAt) / 100) / 10,
      output_complete: true, ...details,
    };
    this.writer.ended(ended);
    const bytes = this.writer.bytes;
    this.writer.close();
    const now = nowIso();
    const { db } = this.host.stack.runtime;
    await db.updateTable('session_journals').set({ ended_at: now, output_bytes: bytes, truncated: ended.output_complete ? 0 : 1 })
      .where('operation_id', '=', this.id).execute();
    await db.updateTable('operations').set({
      state: 'ended', status: 'succeeded', end_reason: ended.end_reason, exit_code: ended.exit_code, ended_at: now, updated_at: now,
    }).where('id', '=', this.id).execute();
    announceJournalAppended(this.id);
  }
}
