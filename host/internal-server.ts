import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { ApiError } from '../services/errors.js';
import { Redactor } from '../drains/redaction-pool.js';
import { INTERNAL_BEARER_LABEL, localRecording } from '../recordings/service.js';

const RECORDING = /^\/internal\/v1\/sessions\/(\d{1,15})\/recording$/;

/**
 * A stack host's internal endpoint: what other essh processes need from the files only this host has.
 * Today that is one thing, a session's recording built from its journal, for the API's processes
 * (recordings/service.ts). Every request carries a bearer that every essh process derives from the
 * secrets key they already share (an HMAC of a fixed label, lib/secrets.ts `derive`), so nothing new
 * is to be distributed; anything else is refused. Bind it to an address only essh's processes reach.
 */
export class HostInternalServer {
  private server?: http.Server;
  private readonly redactor: Redactor;
  private readonly accepted: Buffer[];
  url?: string;

  constructor(
    private readonly deps: {
      db: Db; log: Logger; secrets: SecretBox; hostId: string; dataDir: string; retentionS: number;
      listen: { host: string; port: number };
      /** The URL other processes use, when not http://<listen host>:<port> (a proxy, a NAT). */
      publicUrl?: string;
    },
  ) {
    this.redactor = new Redactor(deps.db);
    this.accepted = deps.secrets.derive(INTERNAL_BEARER_LABEL).map((t) => Buffer.from(t));
  }

  /** Listens; resolves with the URL to register (HostRegistration.update({ internalUrl })). */
  async start(): Promise<string> {
    const server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => server.listen(this.deps.listen.port, this.deps.listen.host, resolve).once('error', reject));
    this.server = server;
    const { port } = server.address() as AddressInfo;
    const host = this.deps.listen.host.includes(':') ? `[${this.deps.listen.host}]` : this.deps.listen.host;
    this.url = this.deps.publicUrl ?? `http://${host}:${port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private authorized(req: http.IncomingMessage): boolean {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const given = Buffer.from(m[1]!);
    return this.accepted.some((t) => t.length === given.length && timingSafeEqual(t, given));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const reply = (status: number, error: string, message: string) => {
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error, message }));
    };
    try {
      if (!this.authorized(req)) return reply(401, 'unauthorized', 'This is an essh host\'s internal endpoint; it needs the bearer derived from the secrets key.');
      const m = RECORDING.exec(new URL(req.url ?? '/', 'http://x').pathname);
      if (req.method !== 'GET' || !m) return reply(404, 'not_found', 'No such internal route.');
      const id = Number(m[1]);
      const stream = await localRecording({ db: this.deps.db, redactor: this.redactor, dataDir: this.deps.dataDir, hostId: this.deps.hostId, retentionS: this.deps.retentionS }, id);
      if (!stream) return reply(404, 'not_found', `Host ${this.deps.hostId} has no journal of session ${id}.`);
      res.writeHead(200, { 'content-type': 'application/x-asciicast' });
      await pipeline(stream, res);
    } catch (err) {
      if (err instanceof ApiError) return reply(err.status, err.code, err.message);
      this.deps.log.warn({ err, url: req.url }, 'internal endpoint request failed');
      if (res.headersSent) res.destroy();
      else reply(500, 'internal', 'The host could not read the journal.');
    }
  }
}
