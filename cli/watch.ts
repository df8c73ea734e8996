import type { EsshApi } from './api.js';
import type { Session } from '../shapes/answers.js';
import { CliError } from './config.js';
import { printable, printableJson } from '../lib/printable.js';

export interface WatchOptions {
  intervalMs: number;
  json: boolean;
  /** Redraw a table in place (a terminal) rather than print one line per change. */
  redraw: boolean;
  /** The command line shown on top of the redrawn screen. */
  title: string;
  table: (sessions: Session[]) => string;
}

/** A line per change: what a session became, with when. */
function describeChange(before: Session | undefined, after: Session | null, id: number): string {
  const time = new Date().toISOString().slice(11, 19);
  if (!after) return `${time}  session ${id}: no longer visible`;
  const who = `session ${after.id} (${printable(after.app)}, ${printable(after.user.email)})`;
  const code = after.exit_code !== null ? `exit ${after.exit_code}` : '';
  const reason = after.end_reason === 'exit' ? code : [after.end_reason, code].filter(Boolean).join(', ');
  const end = reason ? ` (${printable(reason)})` : '';
  if (!before) return `${time}  ${who}: new, ${after.state}${end}`;
  return `${time}  ${who}: ${before.state} → ${after.state}${end}`;
}

const changed = (a: Session, b: Session) => a.state !== b.state || a.end_reason !== b.end_reason || a.exit_code !== b.exit_code;

/**
 * `essh sessions --watch`: lists again every interval until Ctrl-C (which ends it with status 0).
 * In a terminal the table is redrawn in place with the latest changes under it; otherwise (or with
 * --json) the first list is printed once, then one line (one JSON object) per change. A session that
 * leaves the filtered list (`--state active`, and it ends) is followed on its own until it has ended,
 * so that the changes say what it became.
 */
export async function watchSessions(api: EsshApi, fetch: () => Promise<Session[]>, opts: WatchOptions): Promise<void> {
  const out = process.stdout;
  let stopping = false;
  let wake: () => void = () => undefined;
  const stop = () => {
    stopping = true;
    wake();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const recent: string[] = [];
  let known: Map<number, Session> | undefined;
  /** Sessions that left the filtered list before they ended, as last seen. */
  const departed = new Map<number, Session>();
  let trouble = '';
  try {
    while (!stopping) {
      let list: Session[] | undefined;
      try {
        list = await fetch();
        trouble = '';
      } catch (err) {
        // The first list must work; later, a passing outage is shown and the watch goes on, but a
        // refusal (the token was revoked, say) ends it.
        if (!known || !(err instanceof CliError) || (err.status !== undefined && err.status < 500)) throw err;
        trouble = `(${new Date().toISOString().slice(11, 19)}: ${printable(err.message)}; trying again)`;
        if (!opts.redraw) process.stderr.write(`essh: ${trouble}\n`);
      }
      if (list) {
        const now = new Map(list.map((s) => [s.id, s]));
        if (!known) {
          if (opts.json) for (const s of list) out.write(printableJson(s) + '\n');
          else if (!opts.redraw) out.write(list.length ? opts.table(list) : '');
        } else {
          const changes: [Session | undefined, Session | null, number][] = [];
          for (const s of list) {
            const before = known.get(s.id) ?? departed.get(s.id);
            departed.delete(s.id);
            if (!before || changed(before, s)) changes.push([before, s, s.id]);
          }
          for (const [id, before] of known) if (!now.has(id)) departed.set(id, before);
          // Sessions that left the list are followed one by one until they have ended.
          for (const [id, before] of departed) {
            let after: Session | null;
            try {
              after = await api.get<Session>(`/sessions/${id}`);
            } catch (err) {
              if (err instanceof CliError && err.status === 404) after = null;
              else continue; // a passing failure: try again next time
            }
            if (!after || changed(before, after)) changes.push([before, after, id]);
            if (!after || after.state === 'ended') departed.delete(id);
            else departed.set(id, after);
          }
          for (const [before, after, id] of changes) {
            const line = describeChange(before, after, id);
            recent.push(line);
            if (opts.json) out.write(printableJson(after ?? { id, visible: false }) + '\n');
            else if (!opts.redraw) out.write(line + '\n');
          }
          recent.splice(0, Math.max(0, recent.length - 8));
        }
        known = now;
      }
      if (opts.redraw && known) draw(opts, [...known.values()], recent, trouble);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, opts.intervalMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
        if (stopping) wake();
      });
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/** One screen: a title line, the table cut to the terminal's height, the latest changes. */
function draw(opts: WatchOptions, sessions: Session[], recent: string[], trouble: string) {
  const out = process.stdout;
  const rows = out.rows || 24;
  const title = `Every ${opts.intervalMs / 1000} s: ${opts.title}`;
  const clock = new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  const head = [title.padEnd(Math.max(0, (out.columns || 80) - clock.length - 1)) + ' ' + clock, ...(trouble ? [trouble] : []), ''];
  const tail = recent.length ? ['', 'Recent changes (Ctrl-C to stop):', ...recent] : ['', 'Ctrl-C to stop.'];
  let body = sessions.length ? opts.table(sessions).trimEnd().split('\n') : ['No sessions.'];
  const room = rows - head.length - tail.length - 1;
  if (body.length > room) body = [...body.slice(0, Math.max(1, room - 1)), `… and ${body.length - Math.max(1, room - 1)} more lines`];
  // Home, then each line cleared to its end, then the rest of the screen: no flicker of a full clear.
  out.write('\x1b[H' + [...head, ...body, ...tail].map((l) => l + '\x1b[K').join('\n') + '\n\x1b[J');
}
