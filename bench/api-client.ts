// Small helpers the benchmark modules share: calls to the essh API as a given token, and waiting for a
// session's state in the Operation record (read from the database, so that waiting adds no API load).
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient, type ApiResponse } from '../test/support/api-client.js';
import type { BenchContext } from './types.js';

export { sleep };

export type ApiAnswer<T = any> = Pick<ApiResponse<T>, 'status' | 'body'>;

/** One call to the API as `token` (the tests' client, test/support/api-client.ts): its status and body, whatever they are. */
export function apiCall<T = any>(ctx: BenchContext, method: string, path: string, token: string, body?: unknown): Promise<ApiAnswer<T>> {
  return new ApiClient(ctx.apiUrl).request<T>(method, path, token, body);
}

/** Like apiCall, but anything other than 2xx is an error naming the call. */
export async function apiOk<T = any>(ctx: BenchContext, method: string, path: string, token: string, body?: unknown): Promise<T> {
  const r = await apiCall<T>(ctx, method, path, token, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function sessionState(ctx: BenchContext, id: number) {
  return ctx.runtime.db.selectFrom('operations').select(['state', 'end_message']).where('id', '=', id).executeTakeFirst();
}

export async function waitForState(ctx: BenchContext, id: number, states: string[], timeoutMs = 120_000, pollMs = 50): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await sessionState(ctx, id);
    if (row && states.includes(row.state)) return row.state;
    if (row?.state === 'ended') throw new Error(`session ${id} ended while waiting for ${states.join('/')}: ${row.end_message}`);
    if (Date.now() > deadline) throw new Error(`session ${id} is still ${row?.state} after ${timeoutMs} ms (waiting for ${states.join('/')})`);
    await sleep(pollMs);
  }
}

/** Terminates the session (if it has not ended) and waits until its record says ended. */
export async function endSession(ctx: BenchContext, id: number, token: string, timeoutMs = 120_000): Promise<void> {
  if ((await sessionState(ctx, id))?.state !== 'ended') {
    await apiCall(ctx, 'POST', `/sessions/${id}/terminate`, token, {});
  }
  await waitForState(ctx, id, ['ended'], timeoutMs, 100);
}

/** Ends every session in `ids`, all at once, and reports the ones that would not end (within `timeoutMs` each). */
export async function endSessions(ctx: BenchContext, ids: Iterable<number>, token: string, timeoutMs = 120_000): Promise<void> {
  const results = await Promise.allSettled([...ids].map((id) => endSession(ctx, id, token, timeoutMs)));
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) throw new Error(`${failed.length} sessions did not end: ${failed[0]!.reason}`);
}
