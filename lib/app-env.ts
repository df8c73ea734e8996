import type { Db } from './db.js';
import type { SecretBox } from './secrets.js';

/**
 * An app's environment (its `env`, which holds database URLs, API keys and the like) is stored sealed
 * like the drains' credentials (lib/secrets.ts): a copy of the database alone gives none of it away.
 * Only the host that makes the app's containers and the admins who may see the app open it.
 */
export function sealEnv(secrets: SecretBox, env: Record<string, string>): string {
  return secrets.seal(JSON.stringify(env));
}

export function openEnv(secrets: SecretBox, stored: string): Record<string, string> {
  return JSON.parse(secrets.open(stored)) as Record<string, string>;
}

/**
 * Seals under the current key the app environments stored in clear (by an earlier version) or under a
 * previous key; run at start-up, idempotent. Resolves with how many it sealed again.
 */
export async function sealStoredAppEnvs(db: Db, secrets: SecretBox): Promise<number> {
  const rows = await db.selectFrom('apps').select(['id', 'env']).execute();
  let resealed = 0;
  for (const r of rows) {
    if (!secrets.needsResealing(r.env)) continue;
    let sealed: string;
    try {
      sealed = secrets.seal(secrets.open(r.env));
    } catch (err) {
      throw new Error(`app ${r.id}'s environment: ${(err as Error).message}`);
    }
    // Only if nobody changed the row meanwhile (another process sealing it at the same start).
    await db.updateTable('apps').set({ env: sealed }).where('id', '=', r.id).where('env', '=', r.env).execute();
    resealed++;
  }
  return resealed;
}
