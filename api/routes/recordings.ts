import type { RecordingsService } from '../../recordings/service.js';
import { RawResponse, type RouteModule } from '../route.js';
import * as s from '../schemas.js';

/** Session recordings (CONTRACT §3), built from the session's journal on its host. */
export function recordingRoutes(recordings: RecordingsService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/sessions/{id}/recording', summary: "The session's terminal recording (asciicast v2)", params: s.params.id,
      errors: [410, 503],
      handler: async ({ principal, params }) => new RawResponse('application/x-asciicast', await recordings.recording(principal, params.id)),
    });
  };
}
