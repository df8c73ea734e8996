/**
 * Journals whose `ended` record is being written, in this host's process: the portal appends nothing
 * more to them (and forwards nothing more to the client), so `ended` stays the journal's last record.
 */
const sealed = new Set<number>();

export function sealJournal(operationId: number): void {
  sealed.add(operationId);
  // A session's id is never reused; the set only needs to outlive its last attachment.
  setTimeout(() => sealed.delete(operationId), 10 * 60_000).unref();
}

export function isJournalSealed(operationId: number): boolean {
  return sealed.has(operationId);
}
