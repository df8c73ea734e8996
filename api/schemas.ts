import { z } from 'zod';
import { PLANS } from '../lib/plans.js';
import { END_REASONS, SESSION_STATES } from '../workflows/definitions.js';
import { ROLES } from '../services/auth.js';

export const handle = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a handle is 1–63 lower-case letters, digits, ".", "_" or "-", starting with a letter or digit');
const id = z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;
const noNul = (s: string) => !s.includes('\0');

export const params = {
  app: z.object({ app: handle }),
  id: z.object({ id }),
  account: z.object({ account: handle }),
  name: z.object({ name: handle }),
  userToken: z.object({ id, tokenId: id }),
  userSshKey: z.object({ id, keyId: id }),
};

export const createSessionBody = z
  .object({
    command: z
      .array(z.string().max(4096).refine(noNul, 'must not contain NUL bytes'))
      .min(1, 'give at least the program to run, or leave "command" out for the app\'s shell')
      .max(256)
      .optional(),
    container_size_mb: z.number().int().min(128, 'at least 128 MB').max(65536, 'at most 65536 MB').optional(),
    tty: z.boolean().optional().describe('false: no TTY, separate stdout and stderr (default true)'),
    start_on_connect: z
      .boolean()
      .optional()
      .describe('start the container only when the first client attaches, so no output is missed (default false)'),
  })
  .strict();

export const terminateBody = z.object({ reason: z.string().max(500).optional() }).strict();

export const listSessionsQuery = z
  .object({
    app: handle.optional(),
    state: z.enum(SESSION_STATES).optional(),
    user: id.optional(),
  })
  .strict();

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
  .strict();
export const patchAccountBody = z
  .object({
    plan: plan.optional(),
    max_concurrent_sessions: z.number().int().min(0).max(10_000).nullable().optional().describe('null: the plan\'s number again'),
    ...grants,
  })
  .strict();

export const createStackBody = z
  .object({
    name: handle,
    max_session_duration_s: z.number().int().min(1, 'at least 1 s').optional(),
    dedicated: z.boolean().optional(),
  })
  .strict();

const appSettings = {
  image: z.string().min(1).max(512).regex(/^[^\s]+$/, 'an image reference has no spaces'),
  env: z.record(
    z.string().regex(envName, 'environment variable names are letters, digits and "_"'),
    z.string().max(32_768).refine(noNul, 'must not contain NUL bytes'),
  ),
  command: z.array(z.string().max(4096)).min(1).max(256),
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
  .strict();
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
  .strict();

export const createUserBody = z
  .object({
    name: z.string().min(1).max(200),
    email: z.email().max(320),
    role: z.enum(ROLES),
    accounts: z.array(handle).max(100),
  })
  .strict();

export const createTokenBody = z.object({ name: z.string().max(200).optional() }).strict();
// The shape of one OpenSSH public key line, so that /openapi.json says what is accepted; the key
// data itself is checked by parseAuthorizedKey.
const publicKeyLine = /^\s*(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,3}(\s+[^\n]*)?\s*$/;
export const addSshKeyBody = z
  .object({
    public_key: z.string().min(1).max(16_384).regex(publicKeyLine, 'one OpenSSH public key line, "<type> <base64> [comment]", e.g. the contents of ~/.ssh/id_ed25519.pub'),
  })
  .strict();

const user = z.object({ id: z.number(), name: z.string(), email: z.string() });
export const sessionSchema = z.object({
  id: z.number(),
  operation_id: z.number(),
  workflow_id: z.string(),
  app: z.string(),
  account: z.string(),
  stack: z.string(),
  user,
  state: z.enum(SESSION_STATES),
  end_reason: z.enum(END_REASONS).nullable(),
  end_message: z.string().nullable(),
  ended_by: z.string().nullable(),
  exit_code: z.number().nullable(),
  command: z.array(z.string()).nullable(),
  container_size_mb: z.number(),
  container_id: z.string().nullable(),
  created_at: z.string(),
  connected_at: z.string().nullable(),
  ended_at: z.string().nullable(),
  expires_at: z.string().nullable(),
});
export const createdSessionSchema = sessionSchema.extend({
  connect: z.object({
    host: z.string(),
    port: z.number(),
    user: z.string(),
    token: z.string(),
    token_expires_at: z.string(),
    ssh_command: z.string(),
    host_key: z.string().optional(),
    host_key_fingerprint: z.string().optional(),
  }),
});
export const operationSchema = z.object({
  id: z.number(),
  type: z.literal('execute'),
  status: z.enum(['queued', 'running', 'succeeded', 'failed']),
  app: z.string(),
  user_name: z.string(),
  user_email: z.string(),
  command: z.array(z.string()).nullable(),
  container_size_mb: z.number(),
  session_id: z.number(),
  end_reason: z.enum(END_REASONS).nullable(),
  exit_code: z.number().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
export const errorSchema = z.object({ error: z.string(), message: z.string() });
