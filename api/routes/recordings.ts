import type { RecordingsService } from '../../recordings/service.js';
import { RawResponse, type RouteModule } from '../route.js';
import * as s from '../schemas.js';

export const ASCIICAST = 'application/x-asciicast';

/** Session recordings (CONTRACT §3), built from the session's journal on its host. */
export function recordingRoutes(recordings: RecordingsService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/sessions/{id}/recording', operationId: 'getSessionRecording', tag: 'sessions',
      summary: "The session's terminal recording (asciicast v2)",
      description: '`asciinema play` plays it. 410: the recording is past its retention; 429: the user downloaded ' +
        'ESSH_RECORDING_DOWNLOAD_RATE recordings this minute (Retry-After says when to try again); 503: the host that holds it does not answer.',
      params: s.params.id, errors: [410, 429, 503],
      raw: {
        contentType: ASCIICAST,
        description: 'asciicast v2: a JSON header line, then one JSON array [time, "o", text] per line of output',
        schema: { type: 'string' },
      },
      handler: async ({ principal, params }) => new RawResponse(ASCIICAST, await recordings.recording(principal, params.id)),
    });
  };
}
