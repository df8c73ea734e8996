import { EventEmitter, once } from 'node:events';

/**
 * News, within this process, of a session's record: its container is known, or the record changed. A portal in the same
 * process as the host worker (the embedded stack, most hosts) then attaches at once rather than at its
 * next read of the record, which is on the way to the user's prompt. Other processes still poll.
 */
const news = new EventEmitter();
// One short-lived listener per client waiting for its session: as many as there are such clients.
news.setMaxListeners(0);

/** Containers announced in this process, by session: a client may ask after the announcement. */
const known = new Map<number, string>();

export function announceContainerKnown(operationId: number, containerId: string) {
  known.set(operationId, containerId);
  // Kept long enough for the client that is on its way; the record has it by then.
  setTimeout(() => known.delete(operationId), 5 * 60_000).unref();
  news.emit(String(operationId), containerId);
}

/** The session's container if this process announced it, or once it does within `ms`; else undefined. */
export async function containerKnownWithin(operationId: number, ms: number): Promise<string | undefined> {
  const now = known.get(operationId);
  if (now || ms <= 0) return now;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    const [id] = (await once(news, String(operationId), { signal: abort.signal })) as [string];
    return id;
  } catch {
    return undefined; // the timeout: the caller reads the record again
  } finally {
    clearTimeout(timer);
  }
}

/** Tells this process's watchers that a session's record changed (the record activity runs here). */
export function announceRecordChanged(operationId: number) {
  news.emit(`record:${operationId}`);
}

/** Resolves after `ms`, or sooner when this process changes the session's record. */
export async function recordChangedWithin(operationId: number, ms: number): Promise<void> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    await once(news, `record:${operationId}`, { signal: abort.signal });
  } catch {
    // the timeout
  } finally {
    clearTimeout(timer);
  }
}
