// The HTTP side of the API's shapes: path parameters, pagination, errors and the components of
// /openapi.json. The request bodies and the answers clients share are defined once in shapes/.
import { z } from 'zod';
import { CURSOR_PATTERN, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, decodeCursor, type PageRequest } from '../services/pages.js';
import { ROLES, SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';
import { handle, id, plan, sessionFilters } from '../shapes/requests.js';
import * as answers from '../shapes/answers.js';
import { intId, time } from '../shapes/answers.js';

export const params = {
  app: z.object({ app: handle }),
  id: z.object({ id }),
  account: z.object({ account: handle }),
  name: z.object({ name: handle }),
  userToken: z.object({ id, tokenId: id }),
  userSshKey: z.object({ id, keyId: id }),
};

// --- pagination (services/pages.ts) ---------------------------------------------------------------
const page = {
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_LIMIT).default(DEFAULT_PAGE_LIMIT)
    .describe(`how many items a page holds: 1–${MAX_PAGE_LIMIT}, ${DEFAULT_PAGE_LIMIT} when left out`),
  cursor: z.string().regex(CURSOR_PATTERN, 'a cursor is the next_cursor of an earlier page, as it was given').transform(decodeCursor).optional()
    .describe('the next_cursor of the page before; left out: the first page'),
};
/** The query of a list: its filters and the page parameters. */
export const listQuery = <S extends z.ZodRawShape = {}>(filters?: S) => z.object({ ...(filters ?? ({} as S)), ...page }).strict();
/** The page a list's query asks for. */
export const pageRequest = (q: { limit: number; cursor?: number }): PageRequest => ({ limit: q.limit, after: q.cursor });

export const listSessionsQuery = listQuery(sessionFilters.shape);

// --- answers: the shared component schemas of /openapi.json ----------------------------------------
/** The component schemas of /openapi.json, by name; api/app.ts refers to them with `$ref`. */
export const components = new Map<string, z.ZodType>();
export function component<T extends z.ZodType>(name: string, schema: T): T {
  if (components.has(name) && components.get(name) !== schema) throw new Error(`two component schemas named ${name}`);
  components.set(name, schema);
  return schema;
}
/** A page of a list (services/pages.ts), as the component `<Name>List`. */
export function listOf<T extends z.ZodType>(name: string, item: T) {
  return component(`${name}List`, z.object({
    items: z.array(item),
    next_cursor: z.string().nullable().describe('pass it as `cursor` for the next page; null on the last page'),
  }).describe(`A page of ${name} items, in the list's order; follow next_cursor for the rest.`));
}

export const ERROR_CODES = [
  'unauthorized', 'forbidden', 'not_found', 'invalid_request', 'plan_limit', 'rate_limited', 'conflict', 'gone',
  'method_not_allowed', 'unavailable', 'internal',
] as const;
export const errorSchema = component('Error', z.looseObject({
  error: z.enum(ERROR_CODES),
  message: z.string().describe('what went wrong and what to do about it, for a person to read'),
  problems: z.array(z.string()).optional().describe('invalid_request: one line per invalid field, e.g. "body.command: …"'),
  active_sessions: z.array(intId).optional().describe('plan_limit: the sessions that count toward the limit'),
  limit: z.number().int().optional().describe('plan_limit: the account\'s limit of concurrent sessions'),
  largest_container_mb: z.number().int().optional().describe("the plan's largest container, when container_size_mb is over it"),
  retry_after_s: z.number().int().optional().describe('rate_limited: seconds until a new request may succeed (also in Retry-After)'),
}).describe('Every error answer: a code and a sentence; some codes add fields.'));

component('SessionUser', answers.sessionUser);
export const sessionSchema = component('Session', answers.sessionSchema);
component('ConnectInfo', answers.connectInfo);
export const createdSessionSchema = component('CreatedSession', answers.createdSessionSchema);
export const operationSchema = component('Operation', answers.operationSchema);
const idleTimeoutAnswer = z.number().int().nullable()
  .describe('seconds without input or output that end its interactive sessions `idle`; null: none. The operator\'s to set');
export const accountSchema = component('Account', z.object({
  id: intId,
  handle: z.string(),
  plan,
  max_concurrent_sessions: z.number().int().describe('the override when there is one, else the plan\'s'),
  max_concurrent_sessions_override: z.number().int().nullable(),
  largest_container_mb: z.number().int(),
  cpus_per_container: z.number(),
  stacks: z.array(z.string()).describe('the stacks its apps may use; empty: every shared stack'),
  image_prefixes: z.array(z.string()),
  port_forwarding: z.boolean().describe('whether its users may forward TCP ports through the SSH portal (`ssh -L`); the operator\'s to change'),
  file_transfer: z.boolean().describe('whether its users may copy files into and out of their sessions\' containers through the SSH portal (scp, sftp, `essh cp`); the operator\'s to change'),
  idle_timeout_s: idleTimeoutAnswer,
  created_at: time,
}));
export const stackSchema = component('Stack', z.object({
  id: intId, name: z.string(), max_session_duration_s: z.number().int(), dedicated: z.boolean(), idle_timeout_s: idleTimeoutAnswer, created_at: time,
}));
export const appSchema = component('App', z.object({
  id: intId,
  handle: z.string(),
  account: z.string(),
  stack: z.string(),
  image: z.string(),
  env: z.record(z.string(), z.string()).describe('values are "[hidden]" unless the caller may manage the app'),
  command: z.array(z.string()).nullable(),
  working_dir: z.string().nullable(),
  user: z.string().nullable(),
  network: z.string().nullable(),
  warm_pool: z.number().int(),
  created_at: time,
}));
export const userSchema = component('User', answers.userSchema);
export const createdUserSchema = component('CreatedUser', userSchema.extend({
  token: z.string().describe('the user\'s first API token: shown this once'),
  token_expires_at: time.nullable().describe("when that token stops working (the installation's default); null: never"),
}));
export const apiTokenSchema = component('ApiToken', z.object({
  id: intId, name: z.string().nullable(), created_at: time, last_used_at: time.nullable(), revoked_at: time.nullable(),
  expires_at: time.nullable().describe('past it the token gets 401; null: it does not expire'),
}).describe('An API token, never its value'));
export const issuedApiTokenSchema = component('IssuedApiToken', z.object({
  id: intId, name: z.string().nullable(), token: z.string().describe('shown this once'), created_at: time,
  expires_at: time.nullable().describe('past it the token gets 401; null: it does not expire'),
}));
export const sshKeySchema = component('SshKey', answers.sshKeySchema);
export const sshKeyChallengeSchema = component('SshKeyChallenge', z.object({
  challenge: z.string().describe('sign it with the key, as it is: printf %s "$CHALLENGE" | ssh-keygen -Y sign -n NAMESPACE -f KEY'),
  namespace: z.literal(SSH_KEY_NAMESPACE).describe("ssh-keygen's -n"),
  fingerprint: z.string().describe('the key the challenge is for'),
  expires_at: time,
}).describe('What to sign to prove you hold the private key of a key you register'));
export const healthSchema = component('Health', z.object({ ok: z.literal(true), version: z.string() }));

export const sessionListSchema = listOf('Session', sessionSchema);
export const operationListSchema = listOf('Operation', operationSchema);
export const accountListSchema = listOf('Account', accountSchema);
export const stackListSchema = listOf('Stack', stackSchema);
export const appListSchema = listOf('App', appSchema);
export const userListSchema = listOf('User', userSchema);
export const apiTokenListSchema = listOf('ApiToken', apiTokenSchema);
export const sshKeyListSchema = listOf('SshKey', sshKeySchema);
