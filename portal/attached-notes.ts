import { mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Db } from '../lib/db.js';

/**
 * On the host's disk, which connection of this host's portal each session's client is attached
 * through: `<data dir>/attached/<session id>` holds the connection id. The portal that a host process
 * runs after a crash reads it to let the clients of its dead predecessor back in without asking each
 * session's workflow (500 clients reattaching at once were 500 workflow queries, and a third of them
 * went unanswered for 10 s: docs/scale.md). A file and not a row: it is written and read by this
 * host's portal only, at every attach, and must outlive the process that wrote it, not the host.
 *
 * The attachment that writes a note removes it when it ends; notes that a crashed process left for
 * sessions that have ended since are swept (`sweep`).
 */
export class AttachedNotes {
  private readonly dir: string;

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'attached');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(sessionId: number): string {
    return path.join(this.dir, String(sessionId));
  }

  note(sessionId: number, connectionId: string): void {
    writeFileSync(this.file(sessionId), connectionId, { mode: 0o600 });
  }

  /** The connection the session's client was last attached through on this host, if any is noted. */
  read(sessionId: number): string | null {
    try {
      return readFileSync(this.file(sessionId), 'utf8').trim() || null;
    } catch {
      return null;
    }
  }

  /** Every note: session id → connection id. */
  all(): Map<number, string> {
    const notes = new Map<number, string>();
    for (const f of readdirSync(this.dir)) {
      if (!/^\d+$/.test(f)) continue;
      const connectionId = this.read(Number(f));
      if (connectionId) notes.set(Number(f), connectionId);
    }
    return notes;
  }

  /** Removes the note if it is still this connection's (a reattach may have replaced it meanwhile). */
  forget(sessionId: number, connectionId: string): void {
    if (this.read(sessionId) !== connectionId) return;
    try {
      unlinkSync(this.file(sessionId));
    } catch {
      // Already gone.
    }
  }

  /** Removes the notes of sessions that have ended or are not known. */
  async sweep(db: Db): Promise<number> {
    const ids = readdirSync(this.dir).filter((f) => /^\d+$/.test(f)).map(Number);
    let removed = 0;
    for (let i = 0; i < ids.length; i += 1000) {
      const chunk = ids.slice(i, i + 1000);
      const live = new Set(
        (await db.selectFrom('operations').select('id').where('id', 'in', chunk).where('state', 'not in', ['ending', 'ended']).execute())
          .map((r) => Number(r.id)),
      );
      for (const id of chunk) {
        if (live.has(id)) continue;
        try {
          unlinkSync(this.file(id));
          removed++;
        } catch {
          // Already gone.
        }
      }
    }
    return removed;
  }
}
