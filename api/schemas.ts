import { z } from 'zod';
import { DEFAULT_MAX_SESSION_DURATION_S, PLANS } from '../lib/plans.js';
import { CURSOR_PATTERN, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, decodeCursor, type PageRequest } from '../services/pages.js';
import { END_REASONS, SESSION_STATES, type Session } from '../workflows/definitions.js';
import { ROLES } from '../services/auth.js';
import { SSH_KEY_NAMESPACE } from '../lib/ssh-key-challenge.js';
import { TERMINATE_REASON_MAX_CHARS } from '../lib/terminate-reason.js';

export const handle = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a handle is 1–63 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit');
const id = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;
// A string without NUL bytes, said as a pattern so that /openapi.json states it too (a refinement would not show).
const noNul = /^[^\x00]*$/;
const NO_NUL = 'must not contain NUL bytes';

export const params = {
  app: z.object({ app: handle }),
  id: z.object({ id }),
  account: z.object({ account: handle }),
  name: z.object({ name: handle }),
  userToken: z.object({ id, tokenId: id }),
  userSshKey: z.object({ id, keyId: id }),
};

/**
 * A program and its arguments, as an app's or a session's command. An empty program would pass to
 * the engine and fail every session with its raw OCI error, so it is refused here with a sentence.
 */
const argv = (whenLeftOut: string) => z
  .array(z.string().max(4096).regex(noNul, NO_NUL))
  .min(1, `give at least the program to run, or ${whenLeftOut}`)
  .max(256)
  .refine((a) => a.length === 0 || a[0]!.trim() !== '', {
    message: `the first element is the program to run and may not be empty (e.g. ["sh", "-c", "echo hello"]); or ${whenLeftOut}`,
  });

export const createSessionBody = z
  .object({
    command: argv('leave "command" out for the app\'s command or shell').optional(),
    container_size_mb: z.number().int().min(128, 'at least 128 MB').max(65536, 'at most 65536 MB').optional(),
    tty: z.boolean().optional().describe('false: no TTY, separate stdout and stderr (default true)'),
    start_on_connect: z
      .boolean()
      .optional()
      .describe('start the container only when the first client attaches, so no output is missed (default false)'),
  })
  .strict()
  .meta({ examples: [{ command: ['sh', '-c', 'echo hello from essh'] }, { container_size_mb: 2048 }] });

export const terminateBody = z.object({ reason: z.string().max(TERMINATE_REASON_MAX_CHARS).optional() }).strict().meta({ examples: [{ reason: 'maintenance' }] });

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

export const listSessionsQuery = listQuery({
  app: handle.optional().describe("only this app's sessions"),
  state: z.enum(SESSION_STATES).optional().describe('only sessions in this state'),
  user: id.optional().describe("only this user's sessions (a user id)"),
});

const imagePrefix = z.string().min(1).max(255).regex(/^[^\s]+$/, 'an image prefix has no spaces, e.g. "registry.example.com/acme/" or "essh/demo"');
const grants = {
  stacks: z.array(handle).max(100).optional()
    .describe('the stacks its apps may use; empty or absent: every shared stack. A dedicated stack serves one account.'),
  image_prefixes: z.array(imagePrefix).max(100).optional()
    .describe('image references its apps may run: "essh/demo" allows essh/demo[:tag|@digest]; a prefix ending in "/" allows everything under it'),
};
const plan = z.enum(PLANS as [string, ...string[]]);
export const createAccountBody = z
  .object({
    handle,
    plan,
    max_concurrent_sessions: z.number().int().min(0).max(10_000).optional(),
    ...grants,
  })
  .strict()
  .meta({ examples: [{ handle: 'acme', plan: 'growth', image_prefixes: ['registry.example.com/acme/'] }] });
export const patchAccountBody = z
  .object({
    plan: plan.optional(),
    max_concurrent_sessions: z.number().int().min(0).max(10_000).nullable().optional().describe('null: the plan\'s number again'),
    ...grants,
  })
  .strict()
  .meta({ examples: [{ plan: 'scale', max_concurrent_sessions: 20 }] });

export const createStackBody = z
  .object({
    name: handle,
    max_session_duration_s: z.number().int().min(1, 'at least 1 s').max(DEFAULT_MAX_SESSION_DURATION_S, `at most ${DEFAULT_MAX_SESSION_DURATION_S} (7 days)`).optional()
      .describe(`a dedicated stack may set less than the default ${DEFAULT_MAX_SESSION_DURATION_S} (7 days)`),
    dedicated: z.boolean().optional(),
  })
  .strict()
  .meta({ examples: [{ name: 'acme-dedicated', max_session_duration_s: 3600, dedicated: true }] });

const appSettings = {
  image: z.string().min(1).max(512).regex(/^[^\s]+$/, 'an image reference has no spaces'),
  env: z.record(
    z.string().regex(envName, 'environment variable names are letters, digits and "_"'),
    z.string().max(32_768).regex(noNul, NO_NUL),
  ),
  command: argv('leave "command" out (or send null to clear it) for the image\'s own'),
  working_dir: z.string().startsWith('/', 'working_dir must be an absolute path').max(1024),
  user: z.string().min(1).max(256),
  network: z.string().min(1).max(256).describe('operator only; never host, none or container:…'),
  warm_pool: z.number().int().min(0).max(20).describe('operator only: containers kept started for this app\'s sessions'),
};
export const createAppBody = z
  .object({
    handle,
    account: handle,
    stack: handle,
    image: appSettings.image,
    env: appSettings.env.optional(),
    command: appSettings.command.optional(),
    working_dir: appSettings.working_dir.optional(),
    user: appSettings.user.optional(),
    network: appSettings.network.optional(),
    warm_pool: appSettings.warm_pool.optional(),
  })
  .strict()
  .meta({ examples: [{ handle: 'acme-web', account: 'acme', stack: 'local', image: 'registry.example.com/acme/web:1.4', env: { RAILS_ENV: 'production' }, working_dir: '/app' }] });
/** Any setting but the handle and the account; null clears an optional one. */
export const patchAppBody = z
  .object({
    stack: handle.optional().describe('operator only'),
    image: appSettings.image.optional(),
    env: appSettings.env.optional(),
    command: appSettings.command.nullable().optional(),
    working_dir: appSettings.working_dir.nullable().optional(),
    user: appSettings.user.nullable().optional(),
    network: appSettings.network.nullable().optional(),
    warm_pool: appSettings.warm_pool.optional(),
  })
  .strict()
  .meta({ examples: [{ image: 'registry.example.com/acme/web:1.5', env: { RAILS_ENV: 'production' } }] });

export const createUserBody = z
  .object({
    name: z.string().min(1).max(200),
    // RFC 5321: a local part of at most 64 octets, as the "email" format of /openapi.json requires too.
    email: z.email().max(320).refine((e) => Buffer.byteLength(e.slice(0, e.lastIndexOf('@'))) <= 64, 'the part before "@" may be at most 64 characters'),
    role: z.enum(ROLES),
    accounts: z.array(handle).max(100),
  })
  .strict()
  .meta({ examples: [{ name: 'Ada Lovelace', email: 'ada@example.com', role: 'member', accounts: ['acme'] }] });

export const createTokenBody = z.object({
  name: z.string().max(200).optional(),
  expires_at: z.iso.datetime({ offset: true }).optional()
    .describe("when the token stops working (RFC 3339, in the future); left out: the installation's default (ESSH_TOKEN_DEFAULT_TTL_S), or never"),
}).strict().meta({ examples: [{ name: 'laptop' }, { name: 'ci', expires_at: '2030-01-01T00:00:00Z' }] });
// The shape of one OpenSSH public key line, so that /openapi.json says what is accepted; the key
// data itself is checked by parseAuthorizedKey.
const publicKeyLine = /^\s*(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,3}(\s+[^\n]*)?\s*$/;
const publicKey = z.string().min(1).max(16_384).regex(publicKeyLine, 'one OpenSSH public key line, "<type> <base64> [comment]", e.g. the contents of ~/.ssh/id_ed25519.pub');
const examplePublicKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO0C2MMECk+6LNsYmfn7zMlyOEpom37aw6dpL2W2dTM4 ada@laptop';
export const sshKeyChallengeBody = z
  .object({ public_key: publicKey })
  .strict()
  .meta({ examples: [{ public_key: examplePublicKey }] });
export const addSshKeyBody = z
  .object({
    public_key: publicKey,
    challenge: z.string().min(1).max(512).describe('the "challenge" of POST /users/{id}/ssh_key_challenges for this key, as it was given'),
    signature: z.string().min(1).max(16_384)
      .describe(`the key's signature of the challenge, as \`ssh-keygen -Y sign -n ${SSH_KEY_NAMESPACE} -f KEY\` writes it ("-----BEGIN SSH SIGNATURE-----" …)`),
  })
  .strict()
  .meta({ examples: [{
    public_key: examplePublicKey,
    challenge: 'essh-key-registration v1 user=7 key=SHA256:5q0gKJ4vOuE0x0kXbJXhXK0D0tqRYy3HSEhEWBQ8Bhg expires=1765065600 nonce=3m2r5cT0Q7yN8p1L mac=Xr5lq2iG2Hs7kFvJ0wq8n1Yd3bT6cPzA9uE4oRmSx0k',
    signature: '-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ…\n-----END SSH SIGNATURE-----\n',
  }] });

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

export const time = z.iso.datetime().describe('RFC 3339, UTC');
const intId = z.number().int().positive();

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

const sessionUser = component('SessionUser', z.object({ id: intId, name: z.string(), email: z.string() }));
export const sessionSchema = component('Session', z.object({
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
  container_size_mb: z.number().int(),
  container_id: z.string().nullable(),
  created_at: time,
  connected_at: time.nullable(),
  ended_at: time.nullable(),
  expires_at: time.nullable(),
}));
// The schema and the workflow's plain Session (workflows/definitions.ts) are one shape: each must be
// assignable to the other, or this fails to compile.
type SameShape<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const sessionShapesAgree: SameShape<z.infer<typeof sessionSchema>, Session> = true;
void sessionShapesAgree;
export const createdSessionSchema = component('CreatedSession', sessionSchema.extend({
  connect: component('ConnectInfo', z.object({
    host: z.string(),
    port: z.number().int(),
    user: z.string().describe('session-<id>'),
    token: z.string().describe('one-time and short-lived: the SSH password of this session'),
    token_expires_at: time,
    ssh_command: z.string(),
    host_key: z.string().optional().describe("the portal's SSH host key, to check it by"),
    host_key_fingerprint: z.string().optional(),
  })),
}));
export const operationSchema = component('Operation', z.object({
  id: intId,
  type: z.literal('execute'),
  status: z.enum(['queued', 'running', 'succeeded', 'failed']),
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
}));
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
  created_at: time,
}));
export const stackSchema = component('Stack', z.object({
  id: intId, name: z.string(), max_session_duration_s: z.number().int(), dedicated: z.boolean(), created_at: time,
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
export const userSchema = component('User', z.object({
  id: intId, name: z.string(), email: z.string(), role: z.enum(ROLES), accounts: z.array(z.string()), created_at: time,
}));
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
export const sshKeySchema = component('SshKey', z.object({
  id: intId, fingerprint: z.string(), public_key: z.string(), created_at: time,
}));
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
