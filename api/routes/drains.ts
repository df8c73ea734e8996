import { z } from 'zod';
import type { DrainsService } from '../../drains/service.js';
import { RULE_LIMITS } from '../../redaction/redaction.js';
import { REDACTION_PRESET_NAMES, REDACTION_RULE_STATUSES } from '../../shapes/enumerations.js';
import { drainBody, redactionRuleBody } from '../../shapes/requests.js';
import * as answers from '../../shapes/answers.js';
import { CAPS } from '../../domain/caps.js';
import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

const drainSchema = s.component('Drain', answers.drainSchema);
const drainFailureSchema = s.component('DrainFailure', z.object({
  id: z.number().int(), operation_id: z.number().int().nullable(), first_seq: z.number().int().nullable(), last_seq: z.number().int().nullable(),
  events: z.number().int(), status: z.number().int().nullable().describe("the receiver's HTTP status, when it answered one"),
  message: z.string(), at: z.iso.datetime(),
  detail: z.string().nullable().optional().describe("the start of the receiver's answer (operators only)"),
}).describe('A batch the drain refused for good (it is not retried)'));

const ruleSchema = s.component('RedactionRule', z.object({
  id: z.number().int(), account: z.string(), name: z.string(), pattern: z.string(), preset: z.enum(REDACTION_PRESET_NAMES).nullable(),
  replacement: z.string(), created_at: z.iso.datetime(),
  status: z.enum(REDACTION_RULE_STATUSES).describe('over_budget: the rule took longer than its time budget on some output, which was withheld (see last_error)'),
  last_error: z.string().nullable(), last_error_at: z.iso.datetime().nullable(),
  withheld_records: z.number().int().describe('output records withheld because this rule took longer than its budget on them'),
}));

const drainList = s.listOf('Drain', drainSchema);
const failureList = s.listOf('DrainFailure', drainFailureSchema);
const ruleList = s.listOf('RedactionRule', ruleSchema);

/** Log drains (CONTRACT §9) and redaction rules (an extension). */
export function drainRoutes(drains: DrainsService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/accounts/{account}/log_drains', operationId: 'listLogDrains', tag: 'log drains',
      summary: "An account's log drains, with their delivery state", params: s.params.account, query: s.listQuery(), response: drainList,
      handler: ({ principal, params, query }) => drains.list(principal, params.account, s.pageRequest(query)),
    });
    route({
      method: 'post', path: '/accounts/{account}/log_drains', operationId: 'createLogDrain', tag: 'log drains',
      summary: 'Add a log drain (account admins and operators)', status: 201, errors: [403, 409],
      description: '422 also when the url does not suit the drain_type, or its host is not a public address.',
      params: s.params.account, body: drainBody, response: drainSchema,
      links: Object.fromEntries(['getLogDrain', 'listLogDrainFailures', 'resumeLogDrain', 'deleteLogDrain'].map((op) => [op, { id: '$response.body#/id' }])),
      handler: ({ principal, params, body }) => drains.create(principal, params.account, body),
    });
    route({
      method: 'get', path: '/log_drains/{id}', operationId: 'getLogDrain', tag: 'log drains',
      summary: 'One log drain, with its delivery state', params: s.params.id, response: drainSchema,
      handler: ({ principal, params }) => drains.get(principal, params.id),
    });
    route({
      method: 'get', path: '/log_drains/{id}/failures', operationId: 'listLogDrainFailures', tag: 'log drains',
      summary: 'Batches the drain refused for good, most recent first', params: s.params.id, query: s.listQuery(), response: failureList,
      handler: ({ principal, params, query }) => drains.failures(principal, params.id, s.pageRequest(query)),
    });
    route({
      method: 'post', path: '/log_drains/{id}/resume', operationId: 'resumeLogDrain', tag: 'log drains',
      summary: 'Resume a paused log drain (account admins and operators): delivery goes on from where it stopped',
      errors: [403], params: s.params.id, response: drainSchema,
      handler: ({ principal, params }) => drains.resume(principal, params.id),
    });
    route({
      method: 'delete', path: '/log_drains/{id}', operationId: 'deleteLogDrain', tag: 'log drains',
      summary: 'Delete a log drain (account admins and operators)', status: 204, errors: [403], params: s.params.id,
      handler: ({ principal, params }) => drains.delete(principal, params.id),
    });
    route({
      method: 'get', path: '/accounts/{account}/redaction_rules', operationId: 'listRedactionRules', tag: 'redaction rules',
      summary: "An account's redaction rules", params: s.params.account, query: s.listQuery(), response: ruleList,
      handler: ({ principal, params, query }) => drains.listRules(principal, params.account, s.pageRequest(query)),
    });
    route({
      method: 'post', path: '/accounts/{account}/redaction_rules', operationId: 'createRedactionRule', tag: 'redaction rules',
      summary: 'Add a redaction rule (account admins and operators)',
      description: `A regular expression in RE2 syntax ("pattern"), or a preset (card_number, us_ssn): exactly one of the two. ` +
        `Applied before output reaches drains or recordings; at most ${CAPS.redactionRulesPerAccount} per account (409 past that). ` +
        `A pattern may compile to at most ${RULE_LIMITS.programSize} RE2 instructions and take at most ${RULE_LIMITS.worstCaseMs} ms on 16 KB of worst-case output (422 otherwise).`,
      status: 201, errors: [403, 409, 422], params: s.params.account, body: redactionRuleBody, response: ruleSchema,
      links: { deleteRedactionRule: { id: '$response.body#/id' } },
      handler: ({ principal, params, body }) => drains.createRule(principal, params.account, body),
    });
    route({
      method: 'delete', path: '/redaction_rules/{id}', operationId: 'deleteRedactionRule', tag: 'redaction rules',
      summary: 'Delete a redaction rule (account admins and operators)', status: 204, errors: [403], params: s.params.id,
      handler: ({ principal, params }) => drains.deleteRule(principal, params.id),
    });
  };
}
