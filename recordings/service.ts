import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { access, type Principal } from '../services/auth.js';
import { ApiError, notFound } from '../services/errors.js';
import { PerUserRateLimiter } from '../services/rate-limit.js';
import { journalPath } from '../journal/writer.js';
import { hostById } from '../host/registry.js';
import { Redactor } from '../redaction/redaction-pool.js';
import { internalRecordingToken } from './internal-auth.js';
import { asciicastStream } from './asciicast.js';

export function recordingPath(operationId: number) {
  return `/internal/v1/sessions/${operationId}/recording`;
}

const FETCH_TIMEOUT_MS = 10_000;

/** The sentence of a recording past its retention (410). */
export function retentionGone(operationId: number, retentionS: number): ApiError {
  const kept = retentionS > 0 ? `session output is kept for ${formatDuration(retentionS)} after a session ends (ESSH_EVENT_RETENTION_S)` : 'it is no longer kept';
  return new ApiError(410, 'gone', `The recording of session ${operationId} was deleted: ${kept}.`);
}

function formatDuration(s: number): string {
  if (s % 86400 === 0) return `${s / 86400} day${s === 86400 ? '' : 's'}`;
  if (s % 3600 === 0) return `${s / 3600} hour${s === 3600 ? '' : 's'}`;
  return `${s} s`;
}

/**
 * The recording of a session whose journal is on this host, as an asciicast stream; undefined when
 * this host has no journal for it. Throws the 410 of a journal past its retention.
 */
export async function localRecording(
  deps: { db: Db; redactor: Redactor; dataDir: string; hostId: string; retentionS: number }, operationId: number,
): Promise<Readable | undefined> {
  const row = await deps.db.selectFrom('session_journals as sj').innerJoin('operations as o', 'o.id', 'sj.operation_id')
    .innerJoin('apps as a', 'a.id', 'o.app_id')
    .select(['sj.host_id', 'sj.account_id', 'sj.deleted_at', 'o.created_at', 'a.handle as app'])
    .where('sj.operation_id', '=', operationId).executeTakeFirst();
  if (!row || row.host_id !== deps.hostId) return undefined;
  if (row.deleted_at) throw retentionGone(operationId, deps.retentionS);
  const accountId = Number(row.account_id);
  const rules = await deps.redactor.rulesFor(accountId);
  return asciicastStream(journalPath(deps.dataDir, operationId), { operationId, app: row.app, createdAt: row.created_at },
    (windows) => deps.redactor.redact(accountId, windows, rules));
}

/**
 * Recordings for the API: who may see one (the session's owner, its account's admins, operators), and
 * where it is. A session's journal is on the host that ran it (`session_journals.host_id`): read
 * directly when that host runs in this process, else streamed from the host's internal endpoint
 * (recordings/internal-server.ts), with a token made for that one request (recordings/internal-auth.ts), over
 * HTTPS when the host's URL says so.
 */
export class RecordingsService {
  private readonly redactor: Redactor;
  private readonly downloads: PerUserRateLimiter;

  constructor(
    private readonly deps: {
      db: Db;
      secrets: SecretBox;
      retentionS: number;
      /** The host whose journals this process holds, when it runs one. */
      localHost?: { hostId: string; dataDir: string };
      /** PEM CA certificates trusted for hosts' https:// internal endpoints, instead of the system's. */
      internalCa?: string;
      /** Recordings one user may download per minute (ESSH_RECORDING_DOWNLOAD_RATE); 0: no limit. */
      downloadsPerMinute?: number;
    },
  ) {
    this.redactor = new Redactor(deps.db);
    this.downloads = new PerUserRateLimiter(deps.db, {
      action: 'recording-download', perMinute: deps.downloadsPerMinute ?? 0,
      refusal: (who, n) => `Too many recordings downloaded by ${who}: at most ${n} a minute (each one is read whole from its session's journal).`,
    });
  }

  async recording(p: Principal, operationId: number): Promise<Readable> {
    const { db } = this.deps;
    // Counted before anything is looked up: asking for sessions one may not see costs the same.
    await this.downloads.take(p);
    const op = await db.selectFrom('operations').innerJoin('apps', 'apps.id', 'operations.app_id')
      .select(['operations.account_id', 'operations.user_id', 'operations.created_at', 'operations.state', 'apps.handle as app'])
      .where('operations.id', '=', operationId).executeTakeFirst();
    if (!op || !access.canSeeSession(p, { account_id: Number(op.account_id), user_id: Number(op.user_id) })) {
      throw notFound(`Session ${operationId}`);
    }
    const journal = await db.selectFrom('session_journals').select(['host_id', 'deleted_at']).where('operation_id', '=', operationId).executeTakeFirst();
    if (!journal) {
      if (op.state === 'ended') {
        throw new ApiError(410, 'gone', `Session ${operationId} has no recording: it never started a program, or it ran before ` +
          'session output moved to journals on the hosts (output from before that upgrade was not carried over).');
      }
      // Not started yet: a recording with nothing in it so far.
      return Readable.from([JSON.stringify({
        version: 2, width: 80, height: 24, timestamp: Math.floor(Date.parse(op.created_at) / 1000),
        title: `essh session ${operationId} on ${op.app}`, env: { TERM: 'xterm', SHELL: '/bin/sh' },
      }) + '\n']);
    }
    if (journal.deleted_at) throw retentionGone(operationId, this.deps.retentionS);
    const local = this.deps.localHost;
    if (local && local.hostId === journal.host_id) {
      const stream = await localRecording({ db, redactor: this.redactor, retentionS: this.deps.retentionS, ...local }, operationId);
      if (stream) return stream;
    }
    return this.remote(journal.host_id, operationId);
  }

  /** Streams the recording from its host's internal endpoint; its errors become the API's. */
  private async remote(hostId: string, operationId: number): Promise<Readable> {
    const host = await hostById(this.deps.db, hostId);
    const unavailable = (why: string) => new ApiError(503, 'unavailable',
      `The recording of session ${operationId} is on host ${hostId}, which ${why}; try again once that host is back.`);
    if (!host?.internal_url) throw unavailable('has no internal endpoint registered');
    const url = new URL(recordingPath(operationId), host.internal_url);
    const headers = { authorization: `Bearer ${internalRecordingToken(this.deps.secrets, operationId)}` };
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = url.protocol === 'https:'
        ? https.get(url, { headers, timeout: FETCH_TIMEOUT_MS, ...(this.deps.internalCa ? { ca: this.deps.internalCa } : {}) }, resolve)
        : http.get(url, { headers, timeout: FETCH_TIMEOUT_MS }, resolve);
      req.once('timeout', () => req.destroy(new Error('no answer in time')));
      req.once('error', reject);
    }).catch((err: Error) => {
      throw unavailable(`does not answer (${err.message})`);
    });
    if (res.statusCode === 200) return res;
    const body = await new Promise<string>((resolve) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text = (text + c).slice(0, 4096)));
      res.once('end', () => resolve(text));
      res.once('error', () => resolve(text));
    });
    let message: string | undefined;
    try {
      message = (JSON.parse(body) as { message?: string }).message;
    } catch {
      // not ours
    }
    if (res.statusCode === 410) throw new ApiError(410, 'gone', message ?? `The recording of session ${operationId} was deleted.`);
    if (res.statusCode === 404) throw unavailable('has no journal for it (was its data dir lost?)');
    throw unavailable(`answered HTTP ${res.statusCode}`);
  }
}
