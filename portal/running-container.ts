import type { Db } from '../lib/db.js';
import { containerKnownWithin } from '../domain/record-news.js';

/** How long a forward or a transfer waits for a session still being provisioned (as a shell does: portal/session-watch.ts). */
const PROVISIONING_WAIT_MS = 5 * 60_000;

/** A session's container to run something beside its program in, and its account's switches for that. */
export interface RunningContainer {
  containerId: string;
  account: string;
  portForwarding: boolean;
  fileTransfer: boolean;
}

/**
 * The session's running container, waiting for one still being provisioned (a client forwarding or
 * copying as soon as its shell's channel is open may be early: this process's host announces the
 * container before the record has it); else the sentence that says why there is none.
 */
export async function runningContainer(db: Db, sessionId: number): Promise<RunningContainer | { refused: string }> {
  const started = Date.now();
  const read = () => db.selectFrom('operations as o')
    .innerJoin('accounts as a', 'a.id', 'o.account_id')
    .select(['o.state', 'o.container_id', 'a.handle as account', 'a.port_forwarding', 'a.file_transfer'])
    .where('o.id', '=', sessionId).executeTakeFirst();
  let row = await read();
  let containerId = row?.container_id ?? (await containerKnownWithin(sessionId, 0));
  while (row?.state === 'provisioning' && !containerId && Date.now() - started < PROVISIONING_WAIT_MS) {
    containerId = await containerKnownWithin(sessionId, 100);
    row = await read();
    containerId ??= row?.container_id ?? undefined;
  }
  if (!row || !containerId || row.state === 'ending' || row.state === 'ended') {
    const state = row ? row.state.replace(/_/g, ' ') : 'unknown';
    return { refused: `essh: session ${sessionId} has no running container (it is ${state})` };
  }
  return {
    containerId, account: row.account, portForwarding: Number(row.port_forwarding) === 1, fileTransfer: Number(row.file_transfer) === 1,
  };
}
