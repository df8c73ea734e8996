import { CliError, type CliConfig } from './config.js';

/** The REST API as the CLI uses it: an error answer becomes one line naming what to do. */
export class EsshApi {
  constructor(private readonly config: CliConfig) {}

  async request<T>(method: 'GET' | 'POST' | 'DELETE', p: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.config.api_url + p, {
        method,
        headers: {
          authorization: `Bearer ${this.config.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
      throw new CliError(`cannot reach the essh API at ${this.config.api_url} (${cause}); check the URL (essh login --api URL, or ESSH_API_URL)`);
    }
    const text = await res.text();
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const message = typeof parsed?.message === 'string' ? parsed.message : `the API answered ${res.status} ${res.statusText}`;
      throw new CliError(message);
    }
    return parsed as T;
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
  connect: { host: string; port: number; user: string; token: string; token_expires_at: string; ssh_command: string };
}
