import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { DEFAULT_MAX_SESSION_DURATION_S } from '../shapes/enumerations.js';
import { imageRepository } from '../domain/grants.js';
import { sealEnv } from '../domain/app-env.js';
import { hashToken, newToken, type SecretBox } from '../lib/secrets.js';

/** The names of the operator's tokens `npm start` manages: ESSH_ADMIN_TOKEN's, and the one it generates without it. */
const ADMIN_TOKEN_NAME = 'ESSH_ADMIN_TOKEN';
const GENERATED_ADMIN_TOKEN_NAME = 'admin';

export const DEMO_IMAGE = process.env.ESSH_DEMO_IMAGE ?? 'essh/demo:latest';
/** The demo image's shell prompt, `root@<host>:/app$ ` (PS1 from scripts/build-images.sh; root gets `$` too). */
export const DEMO_PROMPT = /@[^\s:]*:\S*[$#] /;

/**
 * On a fresh database: the demo account, stack, app, user and operator, with their tokens written to
 * `<data dir>/demo-token` and `<data dir>/admin-token` (0600). Later starts change nothing, except
 * that ESSH_ADMIN_TOKEN, when set, is made a valid operator token.
 */
export async function seedDemo(db: Db, dataDir: string, secrets: SecretBox, adminToken?: string): Promise<{ seeded: boolean }> {
  const adminFile = path.join(dataDir, 'admin-token');
  const demoFile = path.join(dataDir, 'demo-token');
  const existing = await db.selectFrom('accounts').select('id').where('handle', '=', 'demo').executeTakeFirst();
  if (existing) {
    if (adminToken) await ensureOperatorToken(db, adminToken, adminFile);
    return { seeded: false };
  }
  const now = nowIso();
  const demoToken = newToken('essh');
  const operatorToken = adminToken ?? newToken('essh');
  await db.transaction().execute(async (trx) => {
    const stack = await trx.insertInto('stacks')
      .values({ name: 'local', max_session_duration_s: DEFAULT_MAX_SESSION_DURATION_S, dedicated: 0, created_at: now })
      .onConflict((oc) => oc.column('name').doNothing()).execute()
      .then(() => trx.selectFrom('stacks').select('id').where('name', '=', 'local').executeTakeFirstOrThrow());
    const account = await trx.insertInto('accounts')
      .values({ handle: 'demo', plan: 'development', max_concurrent_sessions: null, image_prefixes: JSON.stringify([imageRepository(DEMO_IMAGE)]), created_at: now })
      .returning('id').executeTakeFirstOrThrow();
    await trx.insertInto('apps').values({
      handle: 'demo', account_id: account.id, stack_id: stack.id, image: DEMO_IMAGE,
      env: sealEnv(secrets, { APP_ENV: 'demo', GREETING: 'hello from the demo app' }),
      // Two containers kept warm: `essh ssh demo` gets its shell without waiting for a container start.
      command: null, working_dir: '/app', user: null, network: null, warm_pool: 2, created_at: now,
    }).execute();
    const demo = await trx.insertInto('users')
      .values({ name: 'Demo User', email: 'demo@example.com', role: 'member', created_at: now })
      .returning('id').executeTakeFirstOrThrow();
    await trx.insertInto('user_accounts').values({ user_id: demo.id, account_id: account.id }).execute();
    await trx.insertInto('api_tokens').values({ user_id: demo.id, token_hash: hashToken(demoToken), name: 'demo', created_at: now }).execute();
    const op = await trx.insertInto('users')
      .values({ name: 'Operator', email: 'operator@example.com', role: 'operator', created_at: now })
      .returning('id').executeTakeFirstOrThrow();
    await trx.insertInto('api_tokens').values({
      user_id: op.id, token_hash: hashToken(operatorToken), name: adminToken ? ADMIN_TOKEN_NAME : GENERATED_ADMIN_TOKEN_NAME, created_at: now,
    }).execute();
  });
  await writeSecret(demoFile, demoToken);
  await writeSecret(adminFile, operatorToken);
  return { seeded: true };
}

/**
 * ESSH_ADMIN_TOKEN is the operator's token: it is made valid, and the one it replaces (an earlier
 * ESSH_ADMIN_TOKEN, or the token generated at seeding) stops working, so that changing the variable
 * really takes the old secret away.
 */
async function ensureOperatorToken(db: Db, token: string, file: string) {
  const hash = hashToken(token);
  const known = await db.selectFrom('api_tokens').select('id').where('token_hash', '=', hash).executeTakeFirst();
  if (!known) {
    const op = await db.selectFrom('users').select('id').where('role', '=', 'operator').orderBy('id').executeTakeFirstOrThrow();
    await db.insertInto('api_tokens').values({ user_id: op.id, token_hash: hash, name: ADMIN_TOKEN_NAME, created_at: nowIso() }).execute();
  }
  await db.updateTable('api_tokens').set({ revoked_at: nowIso() })
    .where('name', 'in', [ADMIN_TOKEN_NAME, GENERATED_ADMIN_TOKEN_NAME]).where('token_hash', '!=', hash).where('revoked_at', 'is', null)
    .execute();
  const current = await readFile(file, 'utf8').catch(() => '');
  if (current.trim() !== token) await writeSecret(file, token);
}

async function writeSecret(file: string, value: string) {
  await writeFile(file, value + '\n', { mode: 0o600 });
  await chmod(file, 0o600);
}
