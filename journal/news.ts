import { EventEmitter } from 'node:events';

/**
 * News, within a host's process, that a session's journal grew: its drains deliver at once instead of
 * at their next look. (Journals live on their host, and the drains that read them run there too.)
 */
const news = new EventEmitter();
news.setMaxListeners(0);

export function announceJournalAppended(operationId: number): void {
  news.emit('appended', operationId);
}

export function onJournalAppended(listener: (operationId: number) => void): () => void {
  news.on('appended', listener);
  return () => news.off('appended', listener);
}
