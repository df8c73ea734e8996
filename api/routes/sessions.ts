import { z } from 'zod';
import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

export const registerSessionRoutes: RouteModule = (route, { sessions }) => {
  route({
    method: 'post', path: '/apps/{app}/sessions', summary: 'Start an ephemeral session on an app', status: 201,
    params: s.params.app, body: s.createSessionBody, response: s.createdSessionSchema,
    handler: ({ principal, params, body }) => sessions.create(principal, params.app, body ?? {}),
  });
  route({
    method: 'get', path: '/sessions', summary: 'List the sessions you may see', query: s.listSessionsQuery,
    response: z.array(s.sessionSchema),
    handler: ({ principal, query }) => sessions.list(principal, query),
  });
  route({
    method: 'get', path: '/sessions/{id}', summary: 'One session', params: s.params.id, response: s.sessionSchema,
    handler: ({ principal, params }) => sessions.get(principal, params.id),
  });
  route({
    method: 'post', path: '/sessions/{id}/terminate', summary: 'End a session (it ends with `terminated`)', status: 202,
    params: s.params.id, body: s.terminateBody, response: s.sessionSchema,
    handler: ({ principal, params, body }) => sessions.terminate(principal, params.id, body?.reason),
  });
  route({
    method: 'get', path: '/operations/{id}', summary: 'One Operation record', params: s.params.id, response: s.operationSchema,
    handler: ({ principal, params }) => sessions.getOperation(principal, params.id),
  });
  route({
    method: 'get', path: '/apps/{app}/operations', summary: "An app's Operation records", params: s.params.app,
    response: z.array(s.operationSchema),
    handler: ({ principal, params }) => sessions.listAppOperations(principal, params.app),
  });

};
