import type { Db } from '../lib/db.js';
import type { ForwardDetails, ObserverDetails, OutputStream, TransferDetails } from './format.js';
import { announceJournalAppended } from './news.js';
import { JournalHold } from './seal.js';
import { JournalWriter } from './writer.js';
import { recordJournalTruncated } from './rows.js';

/** The drains on this host hear of new output at most this often. */
const JOURNAL_NEWS_MS = 50;

/**
 * A session's journal while its program runs on this host (an attached client's, through the portal,
 * or a detached job's): held open so that a teardown in another process waits for it (journal/seal.ts),
 * output appended until the teardown seals it, a truncation recorded once, and the drains told of new
 * output a few times a second at most.
 */
export class SessionOutputJournal {
  readonly writer: JournalWriter;
  private readonly hold: JournalHold;
  private truncated = false;
  private newsTimer?: NodeJS.Timeout;

  constructor(
    private readonly db: Db,
    dataDir: string,
    private readonly operationId: number,
    maxBytes: number | undefined,
    private readonly onError: (err: unknown, what: string) => void,
  ) {
    this.hold = new JournalHold(dataDir, operationId);
    this.writer = JournalWriter.open(dataDir, operationId, maxBytes === undefined ? {} : { maxBytes });
  }

  /** Whether the session's teardown has sealed the journal: nothing more may be appended. */
  get sealed(): boolean {
    return this.hold.sealed;
  }

  /** Appends a chunk of output; false once sealed (nothing more goes out either: JournaledOutput). */
  readonly output = (stream: OutputStream, chunk: Buffer): boolean => {
    if (this.hold.sealed) return false;
    if (!this.writer.output(stream, chunk)) this.markTruncated();
    this.newsTimer ??= setTimeout(() => {
      this.newsTimer = undefined;
      announceJournalAppended(this.operationId);
    }, JOURNAL_NEWS_MS);
    return true;
  };

  /** Appends a port forward's record (never its bytes); false once sealed, the session being over. */
  forward(details: ForwardDetails): boolean {
    return this.lifecycle(() => this.writer.forward(details));
  }

  /** Appends a file transfer's record (never the file's bytes); false once sealed, the session being over. */
  transfer(details: TransferDetails): boolean {
    return this.lifecycle(() => this.writer.transfer(details));
  }

  /** Appends an observer's joining or leaving; false once sealed, the session being over. */
  observer(details: ObserverDetails): boolean {
    return this.lifecycle(() => this.writer.observer(details));
  }

  private lifecycle(append: () => void): boolean {
    if (this.hold.sealed) return false;
    append();
    announceJournalAppended(this.operationId);
    return true;
  }

  close(): void {
    if (this.newsTimer) {
      clearTimeout(this.newsTimer);
      this.newsTimer = undefined;
      announceJournalAppended(this.operationId);
    }
    this.writer.close();
    this.hold.release();
  }

  private markTruncated() {
    if (this.truncated) return;
    this.truncated = true;
    recordJournalTruncated(this.db, this.operationId)
      .catch((err) => this.onError(err, 'recording a journal truncation failed'));
  }
}
