import { z } from 'zod';
import type { AuditService } from '../../services/audit.js';
import { AUDIT_ACTIONS, AUDIT_TARGET_TYPES } from '../../shapes/enumerations.js';
import { auditFilters } from '../../shapes/requests.js';
import { time } from '../../shapes/answers.js';
import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

const auditEventSchema = s.component('AuditEvent', z.object({
  id: z.number().int().positive(),
  at: time,
  accounts: z.array(z.string()).describe('the accounts the change concerns that the caller administers; empty: an operator-level change'),
  actor: z.object({ id: z.number().int().positive(), name: z.string().nullable(), email: z.string().nullable(), role: z.string().nullable() })
    .nullable().describe('who made the change, as they were then'),
  source_address: z.string().nullable().describe('the address the request came from'),
  action: z.enum(AUDIT_ACTIONS),
  target: z.object({ type: z.enum(AUDIT_TARGET_TYPES), id: z.string(), name: z.string().nullable() }),
  fields: z.array(z.string()).describe('the names of the fields the change set'),
  details: z.record(z.string(), z.unknown()).describe('what changed, without secrets: env variables by name only, SSH keys by fingerprint, drain URLs masked'),
}).describe('One change an administrator made'));

const auditEventList = s.listOf('AuditEvent', auditEventSchema);

const auditQuery = s.listQuery(auditFilters.shape);

/** The audit trail of administrators' changes (CONTRACT §3, GET /audit_events). */
export function auditRoutes(audit: AuditService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/audit_events', operationId: 'listAuditEvents', tag: 'audit',
      summary: "Administrators' changes, newest first (operators; account admins: their accounts')",
      description: '403 for members. Filters combine; a time range is `since` (inclusive) to `until` (exclusive).',
      errors: [403, 404, 422], query: auditQuery, response: auditEventList,
      handler: ({ principal, query }) => {
        const { limit, cursor, ...filters } = query;
        return audit.list(principal, filters, s.pageRequest({ limit, cursor }));
      },
    });
  };
}
