import { z } from 'zod';
import { DRAIN_TYPES, type DrainsService } from '../../drains/service.js';
import { MAX_PATTERN_LENGTH, REDACTION_PRESETS, type RedactionPreset } from '../../drains/redaction.js';
import { CAPS } from '../../lib/caps.js';
import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

const drainBody = z.object({
  handle: s.handle,
  drain_type: z.enum(DRAIN_TYPES),
  url: z.string().min(1).max(2048),
  token: z.string().max(1024).optional(),
  ca_cert: z.string().max(65536).optional(),
  index: z.string().min(1).max(255).optional(),
  pipeline: z.string().min(1).max(255).optional(),
  drain_ephemeral_sessions: z.boolean().optional(),
}).strict();

const drainSchema = z.object({
  id: z.number(), handle: z.string(), account: z.string(), drain_type: z.enum(DRAIN_TYPES), url: z.string(),
  has_token: z.boolean(), has_ca_cert: z.boolean(), index: z.string().nullable(), pipeline: z.string().nullable(),
  drain_ephemeral_sessions: z.boolean(), created_at: z.string(),
  status: z.enum(['active', 'paused']).describe('paused: the receiver refused our credentials or target (401/403/404); nothing is sent or dropped until resumed'),
  paused_reason: z.string().nullable(), paused_at: z.string().nullable(),
  delivery: z.object({
    backlog_bytes: z.number().describe('journal bytes of session output not yet delivered, over every host'),
    backlog_sessions: z.number().describe('sessions not yet delivered to the end'),
    delivered_events: z.number(), failed_events: z.number(),
    last_success_at: z.string().nullable(), last_error_at: z.string().nullable(),
    last_error: z.string().nullable().describe("essh's sentence; the receiver's own answer is never shown to members"),
    last_error_status: z.number().nullable().describe('HTTP status of the last error, when there was one'),
    last_error_detail: z.string().nullable().optional().describe("the start of the receiver's answer (operators only)"),
  }),
});

const presetNames = Object.keys(REDACTION_PRESETS) as [RedactionPreset, ...RedactionPreset[]];
const ruleBody = z.object({
  name: z.string().min(1).max(100),
  pattern: z.string().min(1).max(MAX_PATTERN_LENGTH).optional(),
  preset: z.enum(presetNames).optional(),
  replacement: z.string().max(100).optional(),
}).strict();
const ruleSchema = z.object({
  id: z.number(), account: z.string(), name: z.string(), pattern: z.string(), preset: z.string().nullable(),
  replacement: z.string(), created_at: z.string(),
});

/** Log drains (CONTRACT §9) and redaction rules (an extension). */
export function drainRoutes(drains: DrainsService): RouteModule {
  return (route) => {
    route({
      method: 'get', path: '/accounts/{account}/log_drains', summary: "An account's log drains, with their delivery state",
      params: s.params.account, response: z.array(drainSchema),
      handler: ({ principal, params }) => drains.list(principal, params.account),
    });
    route({
      method: 'post', path: '/accounts/{account}/log_drains', summary: 'Add a log drain (account admins and operators)', status: 201,
      params: s.params.account, body: drainBody, response: drainSchema,
      handler: ({ principal, params, body }) => drains.create(principal, params.account, body),
    });
    route({
      method: 'get', path: '/log_drains/{id}', summary: 'One log drain, with its delivery state', params: s.params.id, response: drainSchema,
      handler: ({ principal, params }) => drains.get(principal, params.id),
    });
    route({
      method: 'get', path: '/log_drains/{id}/failures', summary: 'Batches the drain refused for good (most recent first)', params: s.params.id,
      handler: ({ principal, params }) => drains.failures(principal, params.id),
    });
    route({
      method: 'post', path: '/log_drains/{id}/resume', summary: 'Resume a paused log drain (account admins and operators): delivery goes on from where it stopped',
      params: s.params.id, response: drainSchema,
      handler: ({ principal, params }) => drains.resume(principal, params.id),
    });
    route({
      method: 'delete', path: '/log_drains/{id}', summary: 'Delete a log drain (account admins and operators)', status: 204, params: s.params.id,
      handler: ({ principal, params }) => drains.delete(principal, params.id),
    });
    route({
      method: 'get', path: '/accounts/{account}/redaction_rules', summary: "An account's redaction rules",
      params: s.params.account, response: z.array(ruleSchema),
      handler: ({ principal, params }) => drains.listRules(principal, params.account),
    });
    route({
      method: 'post', path: '/accounts/{account}/redaction_rules',
      summary: `Add a redaction rule: a regular expression in RE2 syntax, or a preset (card_number, us_ssn); applied before output reaches drains or recordings; at most ${CAPS.redactionRulesPerAccount} per account`,
      status: 201, params: s.params.account, body: ruleBody, response: ruleSchema,
      handler: ({ principal, params, body }) => drains.createRule(principal, params.account, body),
    });
    route({
      method: 'delete', path: '/redaction_rules/{id}', summary: 'Delete a redaction rule', status: 204, params: s.params.id,
      handler: ({ principal, params }) => drains.deleteRule(principal, params.id),
    });
  };
}
