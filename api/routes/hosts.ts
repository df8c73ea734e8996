import { z } from 'zod';
import type { HostsService } from '../../services/hosts.js';
import { hostSchema } from '../../shapes/answers.js';
import { HOST_ID_PATTERN } from '../../shapes/enumerations.js';
import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

const host = s.component('Host', hostSchema);
const hostList = s.listOf('Host', host);
const hostParams = z.object({
  id: z.string().regex(HOST_ID_PATTERN, 'a host id is letters, digits, ".", "_" or "-" (see GET /hosts)').describe('the host id (its ESSH_HOST_ID)'),
});

/** The stack hosts and their cordons (operators; docs/fleet.md). */
export function hostRoutes(hosts: HostsService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/hosts', operationId: 'listHosts', tag: 'hosts',
      summary: 'The stack hosts: stacks, live sessions, capacity, last report, cordon (operator)',
      errors: [403], query: s.listQuery(), response: hostList,
      handler: ({ principal, query }) => hosts.list(principal, s.pageRequest(query)),
    });
    route({
      method: 'post', path: '/hosts/{id}/cordon', operationId: 'cordonHost', tag: 'hosts',
      summary: 'Cordon a host: it takes no new session, its live ones go on (operator)',
      errors: [403], params: hostParams, response: host,
      handler: ({ principal, params }) => hosts.setCordoned(principal, params.id, true),
    });
    route({
      method: 'post', path: '/hosts/{id}/uncordon', operationId: 'uncordonHost', tag: 'hosts',
      summary: 'Uncordon a host: placement gives it new sessions again (operator)',
      errors: [403], params: hostParams, response: host,
      handler: ({ principal, params }) => hosts.setCordoned(principal, params.id, false),
    });
  };
}
