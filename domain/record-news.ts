import { EventEmitter } from 'node:events';

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
export function containerKnownWithin(operationId: number, ms: number): Promise<string | undefined> {
  const now = known.get(operationId);
  if (now || ms <= 0) return Promise.resolve(now);
  return firstWithin<string>(String(operationId), ms);
}

/**
 * The first value emitted under `name` within `ms`, else undefined. A plain listener and timer: an
 * aborted `events.once` builds an AbortError (a DOMException, with its stack) per timeout, which
 * hundreds of waiting clients pay for several times a second.
 */
function firstWithin<T>(name: string, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const done = (value?: T) => {
      clearTimeout(timer);
      news.off(name, done);
      resolve(value);
    };
    const timer = setTimeout(done, ms);
    news.on(name, done);
  });
}

/** Tells this process's watchers that a session's record changed (the record activity runs here). */
export function announceRecordChanged(operationId: number) {
  news.emit(`record:${operationId}`);
}

/** Resolves after `ms`, or sooner when this process changes the session's record. */
export async function recordChangedWithin(operationId: number, ms: number): Promise<void> {
  await firstWithin(`record:${operationId}`, ms);
}

/** Calls `listener` each time this process changes one of these sessions' records; returns the function that stops it. */
export function onRecordChanged(operationId: number, listener: () => void): () => void {
  const name = `record:${operationId}`;
  news.on(name, listener);
  return () => news.off(name, listener);
}
