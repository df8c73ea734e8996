import http from 'node:http';
import https from 'node:https';
import { CliError, type CliConfig } from './config.js';

/**
 * node:http rather than fetch: fetch loads undici on first use, about 30 ms of every `essh` start
 * (on the way to the prompt for `essh ssh`), for one small JSON request.
 */
function send(url: URL, method: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; statusText: string; text: string }>((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** The REST API as the CLI uses it: an error answer becomes one line naming what to do. */
export class EsshApi {
  constructor(private readonly config: CliConfig) {}

  async request<T>(method: 'GET' | 'POST' | 'DELETE', p: string, body?: unknown): Promise<T> {
    let res: Awaited<ReturnType<typeof send>>;
    try {
      res = await send(
        new URL(this.config.api_url + p),
        method,
        {
          authorization: `Bearer ${this.config.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body === undefined ? undefined : JSON.stringify(body),
      );
    } catch (err) {
      throw new CliError(`cannot reach the essh API at ${this.config.api_url} (${(err as Error).message}); check the URL (essh login --api URL, or ESSH_API_URL)`);
    }
    const { text } = res;
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.status < 200 || res.status > 299) {
      const message = typeof parsed?.message === 'string' ? parsed.message : `the API answered ${res.status} ${res.statusText}`;
      throw new CliError(message);
    }
    return parsed as T;
  }

  get<T>(p: string) {
    return this.request<T>('GET', p);
  }
  /** Every item of a list: the API answers a list one page at a time, { items, next_cursor }. */
  async list<T>(p: string): Promise<T[]> {
    const items: T[] = [];
    const sep = p.includes('?') ? '&' : '?';
    for (let cursor: string | null = null; ;) {
      const page: Page<T> = await this.get<Page<T>>(`${p}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      items.push(...page.items);
      if (!page.next_cursor) return items;
      cursor = page.next_cursor;
    }
  }
  post<T>(p: string, body?: unknown) {
    return this.request<T>('POST', p, body ?? {});
  }
  delete(p: string) {
    return this.request<void>('DELETE', p);
  }
}

/** One page of a list (GET /sessions, …): pass next_cursor as `cursor` for the next one; null on the last. */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Session {
  id: number;
  app: string;
  state: string;
  user: { id: number; name: string; email: string };
  end_reason: string | null;
  end_message?: string | null;
  ended_by?: string | null;
  exit_code: number | null;
  command: string[] | null;
  container_size_mb: number;
  created_at: string;
  connected_at: string | null;
  ended_at: string | null;
}

export interface CreatedSession extends Session {
  connect: { host: string; port: number; user: string; token: string; token_expires_at: string; ssh_command: string; host_key?: string; host_key_fingerprint?: string };
}
