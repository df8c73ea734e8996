import type http from 'node:http';
import type { SecureContext } from 'node:tls';
import { VERSION } from '../lib/version.js';
import { CliError, type CliConfig } from './config.js';
import type { User } from '../shapes/answers.js';

const USER_AGENT = `essh-cli/${VERSION} node/${process.versions.node}`;

/** OpenSSL's verdicts on a certificate chain that Node cannot verify (a private CA, a self-signed one). */
const UNTRUSTED_CERTIFICATE = new Set([
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

/**
 * node:http rather than fetch: fetch loads undici on first use, about 30 ms of every `essh` start
 * (on the way to the prompt for `essh ssh`), for one small JSON request. Loaded on the first request,
 * not at start: node:https brings TLS and crypto, about 10 ms that `essh --help` has no use for.
 */
async function open(url: URL, method: string, headers: Record<string, string>, body?: string) {
  const https = url.protocol === 'https:';
  const { request } = https ? await import('node:https') : await import('node:http');
  const secureContext = https ? await deferredExtraCaContext() : undefined;
  return new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = request(url, { method, headers, ...(secureContext ? { secureContext } : {}) }, resolve);
    req.once('error', reject);
    req.end(body);
  });
}

let extraCaContext: Promise<SecureContext | undefined> | undefined;

/**
 * The CAs of NODE_EXTRA_CA_CERTS when bin/essh kept the variable from node (see there: node would have
 * built its root store from them before the CLI's first line), added to Node's own as node itself does:
 * one TLS context for every request of this process. A file that cannot be read is warned about and
 * skipped, as node does.
 */
function deferredExtraCaContext(): Promise<SecureContext | undefined> {
  const file = process.env.ESSH_DEFERRED_EXTRA_CA_CERTS;
  if (!file) return Promise.resolve(undefined);
  extraCaContext ??= (async () => {
    const [{ readFile }, tls] = await Promise.all([import('node:fs/promises'), import('node:tls')]);
    try {
      return tls.createSecureContext({ ca: [...tls.rootCertificates, await readFile(file, 'utf8')] });
    } catch (err) {
      process.stderr.write(`essh: warning: ignoring the extra CA certificates of NODE_EXTRA_CA_CERTS (${file}): ${(err as Error).message}\n`);
      return undefined;
    }
  })();
  return extraCaContext;
}

function readAll(res: http.IncomingMessage) {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.once('error', reject);
    res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

/**
 * One page of a list answer: the API answers `{ items: [...], next_cursor }` (api/schemas.ts `listOf`),
 * and the CLI follows `next_cursor` (passed back as `?cursor=`) until it is null or absent. It sends no
 * `limit`: the API's own page size is used. A plain JSON array (an API from before pagination) is
 * taken as the only page, and `data` for `items`.
 */
export function pageOf<T>(body: unknown): { items: T[]; next: string | null } {
  if (Array.isArray(body)) return { items: body as T[], next: null };
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    const items = Array.isArray(b.items) ? b.items : Array.isArray(b.data) ? b.data : undefined;
    if (items) {
      const next = b.next_cursor;
      return { items: items as T[], next: next === null || next === undefined || next === '' ? null : String(next) };
    }
  }
  throw new CliError('the API answered a list in a shape this essh does not know (neither an array nor { items, next_cursor }); is essh up to date?');
}

/** The REST API as the CLI uses it: an error answer becomes one line naming what to do. */
export class EsshApi {
  constructor(private readonly config: CliConfig) {}

  get apiUrl() {
    return this.config.api_url;
  }

  /** Sends a request and answers the response of a 2xx; any other answer becomes a CliError. */
  private async send(method: 'GET' | 'POST' | 'DELETE', p: string, body?: unknown): Promise<http.IncomingMessage> {
    let res: http.IncomingMessage;
    try {
      res = await open(
        new URL(this.config.api_url + p),
        method,
        {
          authorization: `Bearer ${this.config.token}`,
          'user-agent': USER_AGENT,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body === undefined ? undefined : JSON.stringify(body),
      );
    } catch (err) {
      if (UNTRUSTED_CERTIFICATE.has((err as NodeJS.ErrnoException).code ?? '')) {
        throw new CliError(`the essh API at ${this.config.api_url} presented a TLS certificate this machine does not trust (${(err as Error).message}); if your organisation signs it with its own CA, point NODE_EXTRA_CA_CERTS at that CA's PEM file`);
      }
      throw new CliError(`cannot reach the essh API at ${this.config.api_url} (${(err as Error).message}); check the URL (essh login --api URL, or ESSH_API_URL)`);
    }
    const status = res.statusCode ?? 0;
    if (status >= 200 && status <= 299) return res;
    const text = await readAll(res).catch(() => '');
    let parsed: any;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const message = typeof parsed?.message === 'string' ? parsed.message : `the API answered ${status} ${res.statusMessage ?? ''}`.trim();
    throw new CliError(message, 1, status);
  }

  async request<T>(method: 'GET' | 'POST' | 'DELETE', p: string, body?: unknown): Promise<T> {
    const text = await readAll(await this.send(method, p, body));
    try {
      return (text ? JSON.parse(text) : undefined) as T;
    } catch {
      throw new CliError(`the API at ${this.config.api_url} answered something that is not JSON to ${method} ${p.replace(/\?.*/, '')}`);
    }
  }

  get<T>(p: string) {
    return this.request<T>('GET', p);
  }
  post<T>(p: string, body?: unknown) {
    return this.request<T>('POST', p, body ?? {});
  }
  delete(p: string) {
    return this.request<void>('DELETE', p);
  }

  /** A GET whose body is not JSON (a recording): the response stream, for the caller to read. */
  stream(p: string): Promise<http.IncomingMessage> {
    return this.send('GET', p);
  }

  /** Every item of a list route, following `next_cursor` across pages (see pageOf). */
  async list<T>(p: string, query: Record<string, string | number | undefined> = {}): Promise<T[]> {
    const all: T[] = [];
    const seen = new Set<string>();
    let cursor: string | null = null;
    for (;;) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
      if (cursor !== null) params.set('cursor', cursor);
      const qs = params.toString();
      const page = pageOf<T>(await this.get<unknown>(qs ? `${p}?${qs}` : p));
      all.push(...page.items);
      if (page.next === null) return all;
      if (seen.has(page.next)) throw new CliError(`the API gave the same next_cursor twice while listing ${p}; stopping rather than looping`);
      seen.add(page.next);
      cursor = page.next;
    }
  }
}

/** --user: a user id, "me", or an e-mail address among the users the caller may see. */
export async function resolveUserId(client: EsshApi, user: string): Promise<number> {
  if (/^\d+$/.test(user)) return Number(user);
  if (user === 'me') return (await client.get<User>('/me')).id;
  if (user.includes('@')) {
    const users = await client.list<{ id: number; email: string }>('/users');
    const found = users.find((u) => u.email.toLowerCase() === user.toLowerCase());
    if (!found) throw new CliError(`no user with e-mail ${user} that you may see; give a user id instead`);
    return found.id;
  }
  throw new CliError(`--user takes a user id, an e-mail address or "me" (got "${user}")`);
}
