import { EventEmitter, once } from 'node:events';

/**
 * News, within this process, that a session's record now names its container. A portal in the same
 * process as the host worker (the embedded stack, most hosts) then attaches at once rather than at its
 * next read of the record, which is on the way to the user's prompt. Other processes still poll.
 */
const news = new EventEmitter();
// One short-lived listener per client waiting for its session: as many as there are such clients.
news.setMaxListeners(0);

export function announceContainerKnown(operationId: number) {
  news.emit(String(operationId));
}

/** Resolves after `ms`, or sooner when the session's container is announced. */
export async function containerKnownOrTimeout(operationId: number, ms: number): Promise<void> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    await once(news, String(operationId), { signal: abort.signal });
  } catch {
    // the timeout: the caller reads the record again either way
  } finally {
    clearTimeout(timer);
  }
}
