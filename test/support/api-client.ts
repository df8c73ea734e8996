// The essh API as the tests and the benchmarks call it: any answer, its status and body, never an
// error for a status (the CLI's own client, cli/api.ts, turns those into messages for a user).

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export class ApiClient {
  constructor(readonly baseUrl: string) {}
  async request<T = any>(method: string, p: string, token?: string, body?: unknown): Promise<ApiResponse<T>> {
    const res = await fetch(this.baseUrl + p, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: any = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON: keep the text */
    }
    return { status: res.status, body: parsed, headers: res.headers };
  }
  get<T = any>(p: string, token?: string) {
    return this.request<T>('GET', p, token);
  }
  post<T = any>(p: string, token?: string, body?: unknown) {
    return this.request<T>('POST', p, token, body);
  }
  delete<T = any>(p: string, token?: string) {
    return this.request<T>('DELETE', p, token);
  }
  /** Every item of a list, following its pages' next_cursor (API lists are paginated: { items, next_cursor }). */
  async listAll<T = any>(p: string, token?: string): Promise<T[]> {
    const items: T[] = [];
    for (let cursor: string | null = null; ;) {
      const sep = p.includes('?') ? '&' : '?';
      const r: ApiResponse<{ items: T[]; next_cursor: string | null }> = await this.get(`${p}${sep}limit=500${cursor ? `&cursor=${cursor}` : ''}`, token);
      if (r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${JSON.stringify(r.body)}`);
      items.push(...r.body.items);
      if (!r.body.next_cursor) return items;
      cursor = r.body.next_cursor;
    }
  }
}
