import { PassThrough } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import type { Db } from '../../lib/db.js';
import type { Logger } from '../../lib/log.js';
import type { OutputStream } from '../../journal/format.js';
import { startWatching, type Audiences, type ObserverSink } from '../../portal/observers.js';
import { ApiError, conflict } from '../../services/errors.js';
import type { SessionsService } from '../../services/sessions.js';
import { RawResponse, type RouteModule } from '../route.js';
import * as s from '../schemas.js';

export const EVENT_STREAM = 'text/event-stream';

/**
 * A live session's output as server-sent events in the shape asciinema-player's `eventsource` driver
 * reads (a `{cols, rows}` reset, then `[time, "o", text]` events, then a `done` event), for the
 * console's live view. The viewer is an observer like `watch-<id>` (portal/observers.ts): the same
 * right to watch, the same tail and live output, and the same audit (the watched user's line, the
 * journal's `observer` record, the drains' `session_observed`).
 */
function eventStreamSink(out: PassThrough, size: () => { cols: number; rows: number } | null): ObserverSink {
  const started = Date.now();
  const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  let headed = false;
  const event = (data: unknown, name?: string) => {
    if (!headed) {
      headed = true;
      out.write(`data: ${JSON.stringify(size() ?? { cols: 80, rows: 24 })}\n\n`);
    }
    out.write(`${name ? `event: ${name}\n` : ''}data: ${JSON.stringify(data)}\n\n`);
  };
  const text = (t: string) => {
    if (t) event([(Date.now() - started) / 1000, 'o', t]);
  };
  const say = (line: string) => text(`\r\n${line}\r\n`);
  return {
    send: (stream: OutputStream, chunk: Buffer) => text(decoders[stream].write(chunk)),
    say,
    end: (line) => {
      say(line);
      event({}, 'done');
      out.end();
    },
    get gone() {
      return out.destroyed || out.writableEnded;
    },
    get backlog() {
      return out.readableLength + out.writableLength;
    },
  };
}

/** The console's live view of a session, served by a process that runs the SSH portal its client is attached through. */
export function liveRoutes(deps: {
  db: Db; sessions: SessionsService; dataDir: string; log: Logger; hostId?: string;
  /** The observers of this process's portal, once it runs (none: this process serves no client). */
  audiences: () => Audiences | undefined;
}): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/sessions/{id}/live', operationId: 'watchSessionLive', tag: 'sessions', auth: false,
      summary: 'A live session\'s output as server-sent events (the console\'s live view), with a watch token',
      description: 'Authenticated by a one-time watch token (`POST /sessions/{id}/watch`, its `connect.token`) in `token`, since ' +
        'a browser\'s EventSource sends no Authorization header. The events are asciinema-player\'s live stream: a `{cols, rows}` ' +
        'reset, then `[time, "o", text]` output (the recent screen first), then a `done` event when the session ends. The viewer ' +
        'is an observer: the watched user is told, and it is a `session_observed` event on the drains. 401: the token is not valid; ' +
        '409: the session is not live, or its client is attached through another process than this one (essh watch ID follows it).',
      errors: [401, 403, 409],
      params: s.params.id, query: z.object({ token: z.string().min(1).max(200) }).strict(),
      raw: { contentType: EVENT_STREAM, description: 'server-sent events: JSON data, asciinema-player\'s eventsource format' },
      handler: async ({ params, query, req }) => {
        const id = params.id;
        const redeemed = await deps.sessions.redeemSessionToken(id, query.token, { watch: true });
        if (!redeemed?.watcherId) {
          throw new ApiError(401, 'unauthorized', `This watch token is not valid for session ${id} (unknown, used once already, or expired); ` +
            `ask for another with POST /sessions/${id}/watch.`);
        }
        const audiences = deps.audiences();
        if (!audiences) throw conflict(`This API process serves no SSH portal, so it has no live output of session ${id}; watch it with essh watch ${id}.`);
        const out = new PassThrough();
        const watching = await startWatching({ ...deps, audiences }, {
          sessionId: id, userId: redeemed.watcherId, credential: 'token', address: req.ip ?? req.socket.remoteAddress ?? '',
          sink: eventStreamSink(out, () => audiences.of(id)?.clientSize() ?? null), howToStop: 'Close the live view to stop watching.',
        });
        if ('refused' in watching) throw conflict(watching.refused.replace(/^essh: /, ''));
        const res = req.res!;
        res.setHeader('Cache-Control', 'no-store');
        // nginx (deploy/nginx) would otherwise hold the events back in its buffer.
        res.setHeader('X-Accel-Buffering', 'no');
        res.once('close', () => watching.leave(`essh: stopped watching session ${id}.`));
        return new RawResponse(EVENT_STREAM, out);
      },
    });
  };
}
