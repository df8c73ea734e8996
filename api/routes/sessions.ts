import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';
import * as req from '../../shapes/requests.js';

export const registerSessionRoutes: RouteModule = (route, { sessions }) => {
  route({
    method: 'post', path: '/apps/{app}/sessions', operationId: 'createSession', tag: 'sessions',
    summary: 'Start an ephemeral session on an app',
    description: 'The answer\'s `connect` block holds a one-time token for the SSH portal. 429: the account is at its ' +
      'plan\'s limit of concurrent sessions (plan_limit) or these credentials created too many sessions this minute ' +
      '(rate_limited); 422: container_size_mb is over the plan\'s largest.',
    status: 201, errors: [403, 429, 503],
    params: s.params.app, body: req.createSessionBody, response: s.createdSessionSchema,
    links: {
      getSession: { id: '$response.body#/id' }, terminateSession: { id: '$response.body#/id' },
      getOperation: { id: '$response.body#/operation_id' }, getSessionRecording: { id: '$response.body#/id' },
    },
    handler: ({ principal, params, body }) => sessions.create(principal, params.app, body ?? {}),
  });
  route({
    method: 'get', path: '/sessions', operationId: 'listSessions', tag: 'sessions',
    summary: 'List the sessions you may see, newest first',
    description: 'Members see their own sessions, account admins those of their accounts, operators all.',
    query: s.listSessionsQuery, response: s.sessionListSchema,
    handler: ({ principal, query }) => sessions.list(principal, { app: query.app, state: query.state, user: query.user }, s.pageRequest(query)),
  });
  route({
    method: 'get', path: '/sessions/{id}', operationId: 'getSession', tag: 'sessions', summary: 'One session',
    params: s.params.id, response: s.sessionSchema,
    handler: ({ principal, params }) => sessions.get(principal, params.id),
  });
  route({
    method: 'post', path: '/sessions/{id}/terminate', operationId: 'terminateSession', tag: 'sessions',
    summary: 'End a session (it ends with `terminated`)', status: 202, errors: [403],
    params: s.params.id, body: req.terminateBody, response: s.sessionSchema,
    links: { getSession: { id: '$response.body#/id' } },
    handler: ({ principal, params, body }) => sessions.terminate(principal, params.id, body?.reason),
  });
  route({
    method: 'post', path: '/sessions/{id}/watch', operationId: 'watchSession', tag: 'sessions',
    summary: 'Watch a live session read-only: a one-time token for its portal\'s `watch-<id>`',
    description: 'For the session\'s owner, an admin of its account or an operator. The answer\'s `connect` block logs in as ' +
      '`watch-<id>` on the portal of the session\'s host, with a one-time, short-lived token that is the caller\'s: the portal ' +
      'shows the caller the session\'s recent output, then its output as it happens, and tells the watched user (`essh watch ID`). ' +
      '409: the session is not live (it has ended, or is a detached job: `essh logs -f ID`).',
    status: 201, errors: [403, 409],
    params: s.params.id, response: s.createdSessionSchema,
    links: { getSession: { id: '$response.body#/id' } },
    handler: ({ principal, params }) => sessions.watch(principal, params.id),
  });
  route({
    method: 'get', path: '/operations/{id}', operationId: 'getOperation', tag: 'operations', summary: 'One Operation record',
    params: s.params.id, response: s.operationSchema,
    handler: ({ principal, params }) => sessions.getOperation(principal, params.id),
  });
  route({
    method: 'get', path: '/apps/{app}/operations', operationId: 'listAppOperations', tag: 'operations',
    summary: "An app's Operation records, newest first", params: s.params.app, query: s.listQuery(), response: s.operationListSchema,
    handler: ({ principal, params, query }) => sessions.listAppOperations(principal, params.app, s.pageRequest(query)),
  });
};
