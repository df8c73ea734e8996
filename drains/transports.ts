import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { rootCertificates } from 'node:tls';
import { assertConnectable, guardedLookup, targetHost } from './targets.js';

const REQUEST_TIMEOUT_MS = 15_000;

/**
 * How one delivery attempt went. `message` is our own sentence (every member of the account may read
 * it); `detail` is the start of the receiver's answer, kept for operators only.
 */
export type Outcome =
  | { kind: 'ok' }
  | { kind: 'retry'; message: string; status?: number; detail?: string; retryAfterMs?: number }
  /** Refused for good: recorded in log_drain_failures, and delivery goes on. */
  | {
      kind: 'permanent'; status: number | null; message: string; detail?: string;
      /** When only some events were refused (Elasticsearch items): which ones. */
      refused?: { operationId: number; seq: number }[];
    }
  /** The receiver refused our credentials or does not exist there (401/403/404), or the target is forbidden: the drain pauses. */
  | { kind: 'pause'; status: number | null; message: string; detail?: string }
  /** 413: the batch is too large for the receiver; it is split. */
  | { kind: 'too_large'; status: number; message: string; detail?: string };

/** A private CA is trusted in addition to the public ones, not instead of them. */
export function trustedCas(caCert: string | null): string[] | undefined {
  return caCert ? [...rootCertificates, caCert] : undefined;
}

const REASONS: Record<number, string> = {
  401: 'refused our credentials', 403: 'refused access', 404: 'has nothing at that URL', 413: 'found the batch too large',
};

export function classifyStatus(status: number, body: string, retryAfter?: string | string[]): Outcome {
  if (status >= 200 && status < 300) return { kind: 'ok' };
  const detail = body ? body.slice(0, 300) : undefined;
  const message = `HTTP ${status}: the receiver ${REASONS[status] ?? (status >= 500 ? 'failed' : 'refused the batch')}`;
  if (status === 408 || status === 429 || status >= 500) {
    const s = Number(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
    return { kind: 'retry', status, message, detail, retryAfterMs: Number.isFinite(s) && s > 0 ? s * 1000 : undefined };
  }
  if (status === 401 || status === 403 || status === 404) return { kind: 'pause', status, message, detail };
  if (status === 413) return { kind: 'too_large', status, message, detail };
  return { kind: 'permanent', status, message, detail };
}

export interface HttpAnswer {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** One POST over HTTPS; credentials in the URL become Basic auth. Rejects on network errors. */
export function httpsPost(
  url: URL, body: string | Buffer, headers: Record<string, string>, caCert: string | null, agent?: https.Agent, allowPrivate = false,
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    try {
      assertConnectable(targetHost(url), allowPrivate);
    } catch (err) {
      reject(err);
      return;
    }
    const auth = url.username ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` : undefined;
    const req = https.request({
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || 443,
      path: url.pathname + url.search,
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      auth,
      ca: trustedCas(caCert),
      agent,
      lookup: guardedLookup(allowPrivate),
      timeout: REQUEST_TIMEOUT_MS,
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        // Only the start of an answer is ever read (status details, bulk items): bounded memory.
        if (size < 16 * 1024 * 1024) chunks.push(c);
        size += c.length;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.once('error', reject);
    req.end(body);
  });
}

/**
 * Sends frames over one TLS connection and closes it with close_notify. Syslog has no acknowledgement,
 * so a batch counts as delivered only when the server has read it all and the connection closed cleanly:
 * we end our side (close_notify) and wait for the server's own end.
 */
export function syslogTlsSend(
  target: { host: string; port: number }, frames: readonly Buffer[], caCert: string | null, allowPrivate = false,
): Promise<void> {
  return new Promise((resolve, reject) => {
    try {
      assertConnectable(target.host, allowPrivate);
    } catch (err) {
      reject(err);
      return;
    }
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const socket = tls.connect({
      host: target.host, port: target.port, servername: net.isIP(target.host) ? undefined : target.host, ca: trustedCas(caCert),
      lookup: guardedLookup(allowPrivate),
    });
    const timer = setTimeout(() => done(new Error(`syslog server ${target.host}:${target.port} did not finish within ${REQUEST_TIMEOUT_MS / 1000} s`)), REQUEST_TIMEOUT_MS);
    socket.once('secureConnect', () => {
      socket.cork();
      for (const f of frames) socket.write(f);
      socket.uncork();
      socket.end(); // sends close_notify once everything is written
    });
    socket.on('data', () => undefined); // syslog servers send nothing; drain anyway
    socket.once('end', () => done());
    socket.once('close', (hadError) => done(hadError ? new Error('the syslog connection closed with an error') : undefined));
    socket.once('error', (err) => done(err));
  });
}

export function isTlsAuthFailure(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME/.test(code);
}
