import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Logger } from '../lib/log.js';
import { clientDisconnectedSignal, heartbeatSignal, sessionWorkflowId } from '../shapes/session-workflow.js';
import type { AttachedNotes } from './attached-notes.js';
import { isLivePeerConnection, isPredecessorConnection, type PortalInstance } from './attachment.js';

/** Signals in flight at once when the window opens: hundreds at once would queue at the workflow worker. */
const SIGNALS_AT_ONCE = 20;

/**
 * The reattach window: when a host process starts after its predecessor died (SIGKILL, OOM, a crash),
 * every client that predecessor served lost its connection at the same moment and comes back at
 * once. Reattaching costs each a key exchange and a `docker exec`, and 500 of them on a 2-core host
 * took up to a minute (docs/scale.md), longer than the heartbeat timeout: sessions whose clients were
 * on their way back ended. So the new portal keeps heartbeating, for `windowS`, the connections its
 * predecessor had noted (portal/attached-notes.ts), until each session's client is back (its note
 * then names the new connection) or the window closes; then it says the old connection is gone, and
 * the session ends unless its client came back. Only a crash opens the window: a portal that stops
 * cleanly ends its clients' connections and removes their notes.
 *
 * During an upgrade (lib/handover.ts) the predecessor still runs, draining its clients: their
 * connections are alive and it heartbeats them itself, so they are only watched (`held`). Should it
 * exit with clients left (its drain deadline, or a crash meanwhile), the window opens for those then.
 */
export class ReattachWindow {
  private readonly waiting = new Map<number, { connectionId: string; closesAt: number }>();
  /** Connections of a predecessor that still serves them. */
  private readonly held = new Map<number, string>();
  private timer?: NodeJS.Timeout;
  private heldTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly deps: { client: Client; notes: AttachedNotes; portal: PortalInstance; log: Logger; heartbeatIntervalS: number; windowS: number },
  ) {}

  /** Sessions still waiting for their client (for tests and /metrics). */
  get size(): number {
    return this.waiting.size;
  }

  /** Opens the window for the connections the notes name from an earlier start of this host's portal. */
  async open(): Promise<void> {
    const { notes, portal, windowS } = this.deps;
    if (windowS <= 0) return;
    const live = portal.liveElsewhere?.();
    const closesAt = Date.now() + windowS * 1000;
    for (const [sessionId, connectionId] of notes.all()) {
      if (isPredecessorConnection(connectionId, portal, live)) this.waiting.set(sessionId, { connectionId, closesAt });
      else if (isLivePeerConnection(connectionId, portal, live)) this.held.set(sessionId, connectionId);
    }
    if (this.held.size > 0) {
      this.deps.log.info({ sessions: this.held.size }, 'the host process before this one still serves its clients (an upgrade): watching it');
      this.watchHeld();
    }
    if (this.waiting.size === 0) return;
    this.deps.log.info({ sessions: this.waiting.size, window_s: windowS }, 'the portal before this one stopped without letting its clients go: keeping their sessions while they reattach');
    await this.beat();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.heldTimer);
    this.timer = undefined;
    this.waiting.clear();
    this.held.clear();
  }

  /** Each heartbeat interval: a held connection whose process has gone joins the window from now. */
  private watchHeld() {
    this.heldTimer = setTimeout(() => {
      if (this.stopped) return;
      const { notes, portal, windowS } = this.deps;
      const live = portal.liveElsewhere?.();
      const closesAt = Date.now() + windowS * 1000;
      let joined = 0;
      for (const [sessionId, connectionId] of this.held) {
        if (notes.read(sessionId) !== connectionId) this.held.delete(sessionId);
        else if (!isLivePeerConnection(connectionId, portal, live)) {
          this.held.delete(sessionId);
          this.waiting.set(sessionId, { connectionId, closesAt });
          joined++;
        }
      }
      if (joined > 0) {
        this.deps.log.info({ sessions: joined, window_s: windowS }, 'the host process before this one exited with clients left: keeping their sessions while they reattach');
        if (!this.timer) void this.beat().catch((err) => this.deps.log.warn({ err }, 'reattach window beat failed'));
      }
      if (this.held.size > 0) this.watchHeld();
    }, this.deps.heartbeatIntervalS * 1000);
  }

  private async beat() {
    this.timer = undefined;
    const now = Date.now();
    const due: [number, string, 'heartbeat' | 'gone'][] = [];
    for (const [sessionId, { connectionId, closesAt }] of this.waiting) {
      // Back: its attachment noted the new connection (and told the workflow the old one is gone).
      if (this.deps.notes.read(sessionId) !== connectionId) {
        this.waiting.delete(sessionId);
        continue;
      }
      const closing = now >= closesAt;
      if (closing) this.waiting.delete(sessionId);
      due.push([sessionId, connectionId, closing ? 'gone' : 'heartbeat']);
    }
    await inBatches(due, SIGNALS_AT_ONCE, ([sessionId, connectionId, what]) => this.signal(sessionId, connectionId, what));
    if (this.waiting.size > 0 && !this.stopped) {
      const nextClose = Math.min(...[...this.waiting.values()].map((w) => w.closesAt));
      this.timer = setTimeout(() => void this.beat(), Math.min(this.deps.heartbeatIntervalS * 1000, Math.max(0, nextClose - Date.now())));
    }
  }

  private async signal(sessionId: number, connectionId: string, what: 'heartbeat' | 'gone') {
    // Checked again right before the signal: a client that came back meanwhile must not have its dead
    // connection brought back (it would hold the session a heartbeat timeout after the client leaves).
    if (this.deps.notes.read(sessionId) !== connectionId) {
      this.waiting.delete(sessionId);
      return;
    }
    const workflow = this.deps.client.workflow.getHandle(sessionWorkflowId(sessionId));
    try {
      if (what === 'heartbeat') await workflow.signal(heartbeatSignal, { connection_id: connectionId });
      else {
        await workflow.signal(clientDisconnectedSignal, {
          connection_id: connectionId, reason: `its client did not come back within ${this.deps.windowS} s of its portal's restart`,
        });
        this.deps.notes.forget(sessionId, connectionId);
      }
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        // Ended meanwhile: nothing to keep.
        this.waiting.delete(sessionId);
        this.deps.notes.forget(sessionId, connectionId);
        return;
      }
      this.deps.log.warn({ err: (err as Error).message, session: sessionId }, 'reattach window: signal failed; trying again at the next beat');
    }
  }
}

async function inBatches<T>(items: T[], size: number, run: (item: T) => Promise<void>) {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(run));
}
