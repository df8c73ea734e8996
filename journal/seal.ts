import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pidRuns, removeQuietly } from '../lib/handover.js';

/**
 * Journals whose `ended` record is being written: the portal appends nothing more to them (and
 * forwards nothing more to the client), so `ended` stays the journal's last record.
 *
 * Within one process the check and the append are one synchronous step, so a set suffices. During an
 * upgrade two host processes share the data dir, and teardown (activities/host.ts endSession) may run
 * in the new one while the old one's attachment still appends output. So a seal is also a file, and
 * every attachment holds a writer mark (`<data dir>/journal-locks/<id>.w<pid>`) while it has the
 * journal open: the sealing side writes the seal, then waits until no other live process holds a mark;
 * a writer that sees the seal stops appending and lets its mark go. A write that began before the seal
 * was visible has ended by the time its writer's mark goes, so `ended` comes after it. Marks and not
 * fcntl locks: Node has no flock, and a mark of a process that died is told by its pid.
 */
const sealed = new Set<number>();

function locksDir(dataDir: string): string {
  return path.join(dataDir, 'journal-locks');
}

function sealFile(dataDir: string, operationId: number): string {
  return path.join(locksDir(dataDir), `${operationId}.sealed`);
}

function remember(operationId: number) {
  sealed.add(operationId);
  // A session's id is never reused; the set only needs to outlive its last attachment.
  setTimeout(() => sealed.delete(operationId), 10 * 60_000).unref();
}

/** How long teardown waits for another process's writer to let the journal go before writing `ended` anyway. */
const WRITERS_WAIT_MS = 30_000;

/**
 * Seals the journal for this process and every other one on the data dir, and resolves once no other
 * live process holds it open for writing (or after WRITERS_WAIT_MS: `false`, a writer stuck).
 */
export async function sealJournal(dataDir: string, operationId: number): Promise<boolean> {
  remember(operationId);
  mkdirSync(locksDir(dataDir), { recursive: true, mode: 0o700 });
  writeFileSync(sealFile(dataDir, operationId), '', { mode: 0o600 });
  const deadline = Date.now() + WRITERS_WAIT_MS;
  while (otherWriters(dataDir, operationId) > 0) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

function otherWriters(dataDir: string, operationId: number): number {
  const prefix = `${operationId}.w`;
  let n = 0;
  for (const f of readdirSync(locksDir(dataDir))) {
    if (!f.startsWith(prefix)) continue;
    const pid = Number(f.slice(prefix.length));
    if (pid === process.pid) continue;
    if (pidRuns(pid)) n++;
    else removeQuietly(path.join(locksDir(dataDir), f));
  }
  return n;
}

/** Removes the seal and marks of a journal that is gone (retention). */
export function forgetJournalSeal(dataDir: string, operationId: number): void {
  removeQuietly(sealFile(dataDir, operationId));
}

/**
 * This process's holds per journal. The mark is one file per process, and several writers of one process
 * may hold a journal at once (the attachment, a port forward's or a file copy's record): the mark goes
 * with the last of them, or a forward closing would let an upgrade's teardown seal under the attachment.
 */
const holdsHere = new Map<number, number>();

/** One writer's hold on a session's journal, from its opening until `release`. */
export class JournalHold {
  private readonly mark: string;
  private held = true;

  constructor(private readonly dataDir: string, private readonly operationId: number) {
    mkdirSync(locksDir(dataDir), { recursive: true, mode: 0o700 });
    this.mark = path.join(locksDir(dataDir), `${operationId}.w${process.pid}`);
    holdsHere.set(operationId, (holdsHere.get(operationId) ?? 0) + 1);
    writeFileSync(this.mark, '', { mode: 0o600 });
  }

  /** Sealed, here or by another process: append nothing more, and the hold is let go. */
  get sealed(): boolean {
    if (sealed.has(this.operationId)) return this.releaseSealed();
    if (!existsSync(sealFile(this.dataDir, this.operationId))) return false;
    remember(this.operationId);
    return this.releaseSealed();
  }

  private releaseSealed(): true {
    this.release();
    return true;
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    const left = (holdsHere.get(this.operationId) ?? 1) - 1;
    if (left > 0) return void holdsHere.set(this.operationId, left);
    holdsHere.delete(this.operationId);
    removeQuietly(this.mark);
  }
}
