import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';

/**
 * An app's environment (its `env`, which holds database URLs, API keys and the like) is stored sealed
 * like the drains' credentials (lib/secrets.ts): a copy of the database alone gives none of it away.
 * Only the host that makes the app's containers and the admins who may see the app open it. A
 * session's extra environment (`env` of POST /apps/{app}/sessions) is sealed the same way, opened only
 * by the portal that starts the session's program and the host that journals the names, and dropped
 * when the session ends (domain/operation-record.ts).
 */
export function sealEnv(secrets: SecretBox, env: Record<string, string>): string {
  return secrets.seal(JSON.stringify(env));
}

export function openEnv(secrets: SecretBox, stored: string): Record<string, string> {
  return JSON.parse(secrets.open(stored)) as Record<string, string>;
}

/** A session's extra environment, opened: empty when it was given none (or has ended). */
export async function openSessionEnv(db: Db, secrets: SecretBox, operationId: number): Promise<Record<string, string>> {
  const row = await db.selectFrom('operations').select('env').where('id', '=', operationId).executeTakeFirst();
  return row?.env ? openEnv(secrets, row.env) : {};
}

/**
 * Seals under the current key the app environments stored in clear (by an earlier version) or under a
 * previous key, and the extra environments of sessions not yet ended; run at start-up, idempotent.
 * Resolves with how many of each it sealed again.
 */
export async function sealStoredEnvs(db: Db, secrets: SecretBox): Promise<{ apps: number; sessions: number }> {
  const reseal = (what: string, stored: string) => {
    try {
      return secrets.seal(secrets.open(stored));
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`);
    }
  };
  let apps = 0;
  for (const r of await db.selectFrom('apps').select(['id', 'env']).execute()) {
    if (!secrets.needsResealing(r.env)) continue;
    // Only if nobody changed the row meanwhile (another process sealing it at the same start).
    await db.updateTable('apps').set({ env: reseal(`app ${r.id}'s environment`, r.env) })
      .where('id', '=', r.id).where('env', '=', r.env).execute();
    apps++;
  }
  let sessions = 0;
  for (const r of await db.selectFrom('operations').select(['id', 'env']).where('env', 'is not', null).execute()) {
    if (!r.env || !secrets.needsResealing(r.env)) continue;
    await db.updateTable('operations').set({ env: reseal(`session ${r.id}'s extra environment`, r.env) })
      .where('id', '=', r.id).where('env', '=', r.env).execute();
    sessions++;
  }
  return { apps, sessions };
}
