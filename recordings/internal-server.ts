import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { ApiError } from '../services/errors.js';
import { Redactor } from '../redaction/redaction-pool.js';
import { localRecording } from './service.js';
import { internalRecordingTokenRefusal } from './internal-auth.js';

const RECORDING = /^\/internal\/v1\/sessions\/(\d{1,15})\/recording$/;

/**
 * A stack host's internal endpoint: what other essh processes need from the files only this host has.
 * Today that is one thing, a session's recording built from its journal, for the API's processes
 * (recordings/service.ts). Every request carries a token made for it: for that session, good for a
 * minute, signed with a key derived from the secrets key all essh processes share (recordings/internal-auth.ts);
 * anything else is refused. It speaks HTTPS when given a certificate (ESSH_HOST_INTERNAL_TLS_CERT/KEY),
 * and should be bound to an address only essh's processes reach.
 */
export class HostInternalServer {
  private server?: http.Server;
  private readonly redactor: Redactor;
  url?: string;

  constructor(
    private readonly deps: {
      db: Db; log: Logger; secrets: SecretBox; hostId: string; dataDir: string; retentionS: number;
      listen: { host: string; port: number };
      /** The URL other processes use, when not http(s)://<listen host>:<port> (a proxy, a NAT). */
      publicUrl?: string;
      /** PEM certificate (chain) and key: the endpoint speaks HTTPS. */
      tls?: { cert: string; key: string };
    },
  ) {
    this.redactor = new Redactor(deps.db);
  }

  /** Listens; resolves with the URL to register (HostRegistration.update({ internalUrl })). */
  async start(): Promise<string> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    const { tls } = this.deps;
    const server: http.Server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
    await new Promise<void>((resolve, reject) => server.listen(this.deps.listen.port, this.deps.listen.host, resolve).once('error', reject));
    this.server = server;
    const { port } = server.address() as AddressInfo;
    const host = this.deps.listen.host.includes(':') ? `[${this.deps.listen.host}]` : this.deps.listen.host;
    this.url = this.deps.publicUrl ?? `${tls ? 'https' : 'http'}://${host}:${port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** Why the request's token does not open session `operationId`'s recording, or null when it does. */
  private refusal(req: http.IncomingMessage, operationId: number): string | null {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    if (!m) return 'it carries no bearer token';
    return internalRecordingTokenRefusal(this.deps.secrets, m[1]!, operationId);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const reply = (status: number, error: string, message: string) => {
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error, message }));
    };
    try {
      const m = RECORDING.exec(new URL(req.url ?? '/', 'http://x').pathname);
      if (req.method !== 'GET' || !m) return reply(404, 'not_found', 'No such internal route.');
      const id = Number(m[1]);
      const refusal = this.refusal(req, id);
      if (refusal) {
        return reply(401, 'unauthorized', `This is an essh host's internal endpoint; the request's token was refused: ${refusal}. ` +
          'Each request needs a token made for it by an essh process holding the same secrets key.');
      }
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
