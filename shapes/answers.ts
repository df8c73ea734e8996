// The answers that more than the API reads: the Session (also the workflow's `describe` query and the
// CLI's and console's view), the Operation record, the User, an SSH key and a log drain. The API registers them as components
// of /openapi.json (api/schemas.ts); clients import their types only, so zod stays out of their start-up.
import { z } from 'zod';
import { DRAIN_STATUSES, DRAIN_TYPES, END_REASONS, OPERATION_STATUSES, ROLES, SESSION_STATES } from './enumerations.js';

export const time = z.iso.datetime().describe('RFC 3339, UTC');
export const intId = z.number().int().positive();

export const sessionUser = z.object({ id: intId, name: z.string(), email: z.string() });
/** A session as the API shows it (CONTRACT §3). */
export const sessionSchema = z.object({
  id: intId,
  operation_id: intId.describe('equals id'),
  workflow_id: z.string().describe('the Temporal workflow: ssh-session-<operation_id>'),
  app: z.string(),
  account: z.string(),
  stack: z.string(),
  user: sessionUser,
  state: z.enum(SESSION_STATES),
  end_reason: z.enum(END_REASONS).nullable(),
  end_message: z.string().nullable(),
  ended_by: z.string().nullable().describe('who ended it (a terminate), when someone did'),
  exit_code: z.number().int().nullable(),
  command: z.array(z.string()).nullable().describe("null: the app's shell"),
  detached: z.boolean().describe('a detached job: its command ran with no client (essh logs ID follows its output)'),
  container_size_mb: z.number().int(),
  container_id: z.string().nullable(),
  created_at: time,
  connected_at: time.nullable(),
  ended_at: time.nullable(),
  expires_at: time.nullable(),
});
export type Session = z.infer<typeof sessionSchema>;

export const connectInfo = z.object({
  host: z.string(),
  port: z.number().int(),
  user: z.string().describe('session-<id>; watch-<id> for a watch token (POST /sessions/{id}/watch)'),
  token: z.string().describe('one-time and short-lived: the SSH password of this session (of watching it, for a watch token)'),
  token_expires_at: time,
  ssh_command: z.string(),
  host_key: z.string().optional().describe("the portal's SSH host key, to check it by"),
  host_key_fingerprint: z.string().optional(),
});
export type ConnectInfo = z.infer<typeof connectInfo>;
/** The answer to a new session: the session and how to reach it. */
export const createdSessionSchema = sessionSchema.extend({ connect: connectInfo });
export type CreatedSession = z.infer<typeof createdSessionSchema>;

/** The Operation record of a session (CONTRACT §3). */
export const operationSchema = z.object({
  id: intId,
  type: z.literal('execute'),
  status: z.enum(OPERATION_STATUSES),
  app: z.string(),
  user_name: z.string(),
  user_email: z.string(),
  command: z.array(z.string()).nullable(),
  container_size_mb: z.number().int(),
  session_id: intId,
  end_reason: z.enum(END_REASONS).nullable(),
  exit_code: z.number().int().nullable(),
  created_at: time,
  updated_at: time,
});
export type Operation = z.infer<typeof operationSchema>;

export const userSchema = z.object({
  id: intId, name: z.string(), email: z.string(), role: z.enum(ROLES), accounts: z.array(z.string()), created_at: time,
});
export type User = z.infer<typeof userSchema>;

export const sshKeySchema = z.object({
  id: intId, fingerprint: z.string(), public_key: z.string(), created_at: time,
});
export type SshKey = z.infer<typeof sshKeySchema>;

/** A log drain with its delivery state (CONTRACT §9). */
export const drainSchema = z.object({
  id: z.number().int(), handle: z.string(), account: z.string(), drain_type: z.enum(DRAIN_TYPES),
  url: z.string().describe('credentials in it are masked'),
  has_token: z.boolean(), has_ca_cert: z.boolean(), index: z.string().nullable(), pipeline: z.string().nullable(),
  drain_ephemeral_sessions: z.boolean(), created_at: z.iso.datetime(),
  status: z.enum(DRAIN_STATUSES).describe('paused: the receiver refused our credentials or target (401/403/404); nothing is sent or dropped until resumed'),
  paused_reason: z.string().nullable(), paused_at: z.iso.datetime().nullable(),
  delivery: z.object({
    backlog_bytes: z.number().int().describe('journal bytes of session output not yet delivered, over every host'),
    backlog_sessions: z.number().int().describe('sessions not yet delivered to the end'),
    delivered_events: z.number().int(), failed_events: z.number().int(),
    last_success_at: z.iso.datetime().nullable(), last_error_at: z.iso.datetime().nullable(),
    last_error: z.string().nullable().describe("essh's sentence; the receiver's own answer is never shown to members"),
    last_error_status: z.number().int().nullable().describe('HTTP status of the last error, when there was one'),
    last_error_detail: z.string().nullable().optional().describe("the start of the receiver's answer (operators only)"),
  }),
});
export type Drain = z.infer<typeof drainSchema>;

/** A stack host as operators see it (GET /hosts, docs/fleet.md). */
export const hostSchema = z.object({
  id: z.string().describe('its ESSH_HOST_ID'),
  stacks: z.array(z.string()),
  live_sessions: z.number().int().describe('sessions placed on it and not yet ending'),
  max_sessions: z.number().int().describe('its ESSH_HOST_MAX_SESSIONS'),
  free_disk_bytes: z.number().int().nullable().describe('under its data dir (the journals), as it last reported'),
  free_memory_bytes: z.number().int().nullable().describe('MemAvailable, as it last reported'),
  ssh: z.object({ host: z.string(), port: z.number().int() }).nullable().describe('where its SSH portal answers'),
  seen_at: time.describe('its last report'),
  stale: z.boolean().describe('it has not reported for ESSH_HOST_STALE_S (45 s by default): placement skips it'),
  cordoned: z.boolean().describe('an operator cordoned it: it takes no new session'),
  pool: z.object({
    ready: z.number().int().describe('its warm pool containers running, as it last reported'),
    target: z.number().int().describe("how many its stacks' apps ask for (their warm_pool)"),
  }).nullable().describe('its warm pools, all apps together; null before it first reported them'),
});
export type Host = z.infer<typeof hostSchema>;
