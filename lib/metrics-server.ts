import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './log.js';
import { bearerMatches } from './metrics.js';
import { hostProcesses, listenAfterPredecessor } from './handover.js';

/** What a process exposes: its Prometheus text, and that text's content type. */
export interface Exposition {
  contentType: string;
  text(): Promise<string>;
}

/**
 * Every essh process's own `/metrics` (API, main worker, host): on ESSH_METRICS_HOST:ESSH_METRICS_PORT,
 * loopback by default, and behind `Authorization: Bearer <ESSH_METRICS_TOKEN>` when that is set
 * (config refuses a non-loopback address without it). Nothing else is served here.
 */
export class MetricsServer {
  private server?: http.Server;
  url?: string;

  constructor(
    private readonly deps: {
      host: string; port: number; token?: string; exposition: Exposition; log: Logger;
      /** A host process's: its port may still be its predecessor's, during an upgrade (lib/handover.ts). */
      handover?: { dataDir: string; bindWaitS: number };
    },
  ) {}

  async start(): Promise<string> {
    const { host, port, log } = this.deps;
    const server = http.createServer((req, res) => void this.answer(req, res));
    const { handover } = this.deps;
    await listenAfterPredecessor(server, { host, port, dataDir: handover?.dataDir, waitS: handover?.bindWaitS ?? 0, log, what: 'the metrics listener' })
      .catch((err: NodeJS.ErrnoException) => {
        throw new Error(`the metrics listener could not listen on ${host}:${port} (${err.code ?? err.message}); set ESSH_METRICS_PORT to a free port (0: any)`);
      });
    server.on('error', (err) => log.error({ err }, 'metrics listener error'));
    this.server = server;
    const { port: bound } = server.address() as AddressInfo;
    if (handover) hostProcesses(handover.dataDir).announce({ port: bound });
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`;
    return this.url;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse) {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('Only /metrics is served here.\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return void res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET /metrics\n');
    }
    const { token, exposition } = this.deps;
    if (token && !bearerMatches(req.headers.authorization, token)) {
      return void res.writeHead(401, { 'www-authenticate': 'Bearer realm="essh metrics"', 'content-type': 'text/plain' })
        .end('Send Authorization: Bearer <ESSH_METRICS_TOKEN>.\n');
    }
    try {
      const body = await exposition.text();
      res.writeHead(200, { 'content-type': exposition.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      this.deps.log.error({ err }, 'collecting metrics failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end('Collecting the metrics failed; see the log.\n');
    }
  }
}
