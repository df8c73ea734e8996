// The bodies and filters of the API's requests, each once: the API validates requests with these
// schemas (api/ adds only the HTTP parts: path parameters, pagination, OpenAPI), and the services take
// what they parse to (the types below), so a field added here and forgotten by a service fails to compile.
import { z } from 'zod';
import {
  AUDIT_ACTIONS, AUDIT_TARGET_TYPES, DEFAULT_MAX_SESSION_DURATION_S, DRAIN_TYPES, MAX_IDLE_TIMEOUT_S, MAX_PATTERN_LENGTH, PLANS,
  REDACTION_PRESET_NAMES, ROLES, SESSION_STATES, SSH_KEY_NAMESPACE, TERMINATE_REASON_MAX_CHARS,
} from './enumerations.js';

export const handle = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a handle is 1–63 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit');
/** A positive id, as it comes in a path or a query string. */
export const id = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;
// A string without NUL bytes, said as a pattern so that /openapi.json states it too (a refinement would not show).
const noNul = /^[^\x00]*$/;
const NO_NUL = 'must not contain NUL bytes';

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

/** Environment variables, as an app's `env` and a session's extra `env` take them. */
const envVariables = z.record(
  z.string().regex(envName, 'environment variable names are letters, digits and "_", not starting with a digit'),
  z.string().max(32_768).regex(noNul, NO_NUL),
  { error: (i) => (i.code === 'invalid_type' ? 'an object of names and string values, e.g. {"LOG_LEVEL": "debug"}' : undefined) },
);
export const MAX_SESSION_ENV_VARIABLES = 64;
/** The names and values of a session's extra env together, in UTF-8: far below what execve takes. */
export const MAX_SESSION_ENV_BYTES = 32_768;
const envBytes = (env: Record<string, string>) =>
  Object.entries(env).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v) + 2, 0);

// --- sessions ---------------------------------------------------------------------------------------
export const createSessionBody = z
  .object({
    command: argv('leave "command" out for the app\'s command or shell').optional(),
    container_size_mb: z.number().int().min(128, 'at least 128 MB').max(65536, 'at most 65536 MB').optional(),
    tty: z.boolean().optional().describe('false: no TTY, separate stdout and stderr (default true)'),
    start_on_connect: z
      .boolean()
      .optional()
      .describe('start the container only when the first client attaches, so no output is missed (default false)'),
    env: envVariables
      .meta({ maxProperties: MAX_SESSION_ENV_VARIABLES })
      .refine((e) => Object.keys(e).length <= MAX_SESSION_ENV_VARIABLES, {
        message: `at most ${MAX_SESSION_ENV_VARIABLES} variables for one session; put the rest in the app's env`,
      })
      .refine((e) => envBytes(e) <= MAX_SESSION_ENV_BYTES, {
        message: `the names and values together may be at most ${MAX_SESSION_ENV_BYTES} bytes; put large values in the app's env or a file`,
      })
      .optional()
      .describe("extra environment variables for this session only, over the app's: stored sealed, dropped when the session ends, never shown back"),
    detach: z
      .boolean()
      .optional()
      .describe('true: a detached job (heroku run:detached): the command starts at once with no client, its output goes to the recording, and the session ends when it exits, is terminated or expires'),
  })
  .strict()
  .refine((b) => !b.detach || b.command !== undefined, {
    path: ['command'],
    message: 'a detached session runs the command it is given: give "command" (e.g. ["sh", "-c", "./migrate"]) or leave out "detach"',
  })
  .refine((b) => !b.detach || !b.start_on_connect, {
    path: ['start_on_connect'],
    message: 'a detached session has no client to wait for: leave out "start_on_connect" or "detach"',
  })
  .meta({ examples: [{ command: ['sh', '-c', 'echo hello from essh'] }, { container_size_mb: 2048 }, { env: { LOG_LEVEL: 'debug' } }, { command: ['sh', '-c', './migrate'], detach: true }] });
export type CreateSessionBody = z.infer<typeof createSessionBody>;

export const terminateBody = z.object({ reason: z.string().max(TERMINATE_REASON_MAX_CHARS).optional() }).strict().meta({ examples: [{ reason: 'maintenance' }] });

/** The filters of GET /sessions. */
export const sessionFilters = z.object({
  app: handle.optional().describe("only this app's sessions"),
  state: z.enum(SESSION_STATES).optional().describe('only sessions in this state'),
  user: id.optional().describe("only this user's sessions (a user id)"),
});
export type SessionFilters = z.infer<typeof sessionFilters>;

// --- accounts and stacks ------------------------------------------------------------------------------
const imagePrefix = z.string().min(1).max(255).regex(/^[^\s]+$/, 'an image prefix has no spaces, e.g. "registry.example.com/acme/" or "essh/demo"');
const grants = {
  stacks: z.array(handle).max(100).optional()
    .describe('the stacks its apps may use; empty or absent: every shared stack. A dedicated stack serves one account.'),
  image_prefixes: z.array(imagePrefix).max(100).optional()
    .describe('image references its apps may run: "essh/demo" allows essh/demo[:tag|@digest]; a prefix ending in "/" allows everything under it'),
};
/** A stack's or an account's idle timeout, the operator's to set (portal/idle-timeout.ts). */
const idleTimeout = z.number({ error: 'idle_timeout_s is a number of seconds, or null for none' })
  .int('idle_timeout_s is a whole number of seconds')
  .min(0, 'idle_timeout_s may not be negative; 0 or null turns the idle timeout off')
  .max(MAX_IDLE_TIMEOUT_S, `idle_timeout_s may be at most ${MAX_IDLE_TIMEOUT_S} (7 days, the longest a session lasts)`)
  .nullable().optional()
  .describe('seconds without input from the client and without output from the program after which an interactive session ends `idle` ' +
    '(its client is warned a minute before); 0 or null: none (the default). A session gets the smaller of its stack\'s and its account\'s.');
export const plan = z.enum(PLANS);
export const createAccountBody = z
  .object({
    handle,
    plan,
    max_concurrent_sessions: z.number().int().min(0).max(10_000).optional(),
    ...grants,
  })
  .strict()
  .meta({ examples: [{ handle: 'acme', plan: 'growth', image_prefixes: ['registry.example.com/acme/'] }] });
export type CreateAccountBody = z.infer<typeof createAccountBody>;
export const patchAccountBody = z
  .object({
    plan: plan.optional(),
    max_concurrent_sessions: z.number().int().min(0).max(10_000).nullable().optional().describe('null: the plan\'s number again'),
    ...grants,
    port_forwarding: z.boolean().optional()
      .describe('whether its users may forward TCP ports through the SSH portal (`ssh -L`) from inside their sessions\' containers; true for a new account'),
    file_transfer: z.boolean().optional()
      .describe('whether its users may copy files into and out of their sessions\' containers through the SSH portal (scp, sftp, `essh cp`); true for a new account'),
    idle_timeout_s: idleTimeout,
  })
  .strict()
  .meta({ examples: [{ plan: 'scale', max_concurrent_sessions: 20 }] });
export type PatchAccountBody = z.infer<typeof patchAccountBody>;

export const createStackBody = z
  .object({
    name: handle,
    max_session_duration_s: z.number().int().min(1, 'at least 1 s').max(DEFAULT_MAX_SESSION_DURATION_S, `at most ${DEFAULT_MAX_SESSION_DURATION_S} (7 days)`).optional()
      .describe(`a dedicated stack may set less than the default ${DEFAULT_MAX_SESSION_DURATION_S} (7 days)`),
    dedicated: z.boolean().optional(),
    idle_timeout_s: idleTimeout,
  })
  .strict()
  .meta({ examples: [{ name: 'acme-dedicated', max_session_duration_s: 3600, dedicated: true }] });
export type CreateStackBody = z.infer<typeof createStackBody>;

// --- apps ------------------------------------------------------------------------------------------
const appSettings = {
  image: z.string().min(1).max(512).regex(/^[^\s]+$/, 'an image reference has no spaces'),
  env: envVariables,
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
export type CreateAppBody = z.infer<typeof createAppBody>;
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
export type PatchAppBody = z.infer<typeof patchAppBody>;

// --- users, their tokens and SSH keys ------------------------------------------------------------------
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
export type CreateUserBody = z.infer<typeof createUserBody>;

export const createTokenBody = z.object({
  name: z.string().max(200).optional(),
  expires_at: z.iso.datetime({ offset: true }).optional()
    .describe("when the token stops working (RFC 3339, in the future); left out: the installation's default (ESSH_TOKEN_DEFAULT_TTL_S), or never"),
}).strict().meta({ examples: [{ name: 'laptop' }, { name: 'ci', expires_at: '2030-01-01T00:00:00Z' }] });
export type CreateTokenBody = z.infer<typeof createTokenBody>;
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
export type AddSshKeyBody = z.infer<typeof addSshKeyBody>;

// --- log drains and redaction rules --------------------------------------------------------------------
export const drainBody = z.object({
  handle,
  drain_type: z.enum(DRAIN_TYPES),
  url: z.string().min(1).max(2048),
  token: z.string().max(1024).optional(),
  ca_cert: z.string().max(65536).optional(),
  index: z.string().min(1).max(255).optional(),
  pipeline: z.string().min(1).max(255).optional(),
  drain_ephemeral_sessions: z.boolean().optional(),
}).strict().meta({ examples: [
  { handle: 'collector', drain_type: 'https', url: 'https://logs.example.com/ingest' },
  { handle: 'papertrail', drain_type: 'syslog', url: 'syslog+tls://logs.example.com:6514', token: 'tenant-token' },
  { handle: 'search', drain_type: 'elasticsearch', url: 'https://es.example.com:9200', index: 'essh-{yyyy}.{MM}.{dd}' },
] });
export type DrainBody = z.infer<typeof drainBody>;

export const redactionRuleBody = z.object({
  name: z.string().min(1).max(100),
  pattern: z.string().min(1).max(MAX_PATTERN_LENGTH).optional(),
  preset: z.enum(REDACTION_PRESET_NAMES).optional(),
  replacement: z.string().max(100).optional(),
}).strict().meta({ examples: [{ name: 'cards', preset: 'card_number' }, { name: 'tokens', pattern: 'tok_[A-Za-z0-9]{24}', replacement: '[TOKEN]' }] });
export type RedactionRuleBody = z.infer<typeof redactionRuleBody>;

// --- the audit trail --------------------------------------------------------------------------------
const queryTime = z.iso.datetime({ offset: true });
/** The filters of GET /audit_events. */
export const auditFilters = z.object({
  account: handle.optional().describe("only the events of this account (account admins: one they administer)"),
  actor: z.string().min(1).max(320).regex(noNul, NO_NUL).optional()
    .describe('only the changes of this user: a user id or an e-mail address'),
  target_type: z.enum(AUDIT_TARGET_TYPES).optional().describe('only changes of this kind of thing'),
  action: z.enum(AUDIT_ACTIONS).optional().describe('only this action'),
  since: queryTime.optional().describe('only events at or after this time (RFC 3339)'),
  until: queryTime.optional().describe('only events before this time (RFC 3339)'),
});
export type AuditFilters = z.infer<typeof auditFilters>;
