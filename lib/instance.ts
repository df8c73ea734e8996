import { randomBytes } from 'node:crypto';
import type { Db } from './db.js';

/**
 * This installation's short id (CONTRACT §7), made once per database, or ESSH_INSTALLATION. It is in
 * every container name (`essh-<installation>-<operation id>`) and in the `essh.instance` label, so that
 * two installations sharing one engine never collide, and neither's reconciler touches the other's.
 */
export interface Installation {
  id: string;
  /**
   * The id an earlier version labelled its containers with (a UUID), when this database had one: those
   * containers are still this installation's to report on and remove.
   */
  legacyId?: string;
}

export const INSTALLATION_PATTERN = /^[a-z0-9]{1,16}$/;

export async function loadInstallation(db: Db, fromEnv?: string): Promise<Installation> {
  const legacy = (await db.selectFrom('settings').select('value').where('key', '=', 'instance_id').executeTakeFirst())?.value;
  if (fromEnv !== undefined) {
    if (!INSTALLATION_PATTERN.test(fromEnv)) {
      throw new Error(`ESSH_INSTALLATION must be 1–16 lower-case letters or digits (got "${fromEnv}").`);
    }
    return { id: fromEnv, legacyId: legacy };
  }
  // A database an earlier version made keeps a recognisable id: the start of its old one.
  const made = legacy ? legacy.replace(/-/g, '').slice(0, 8) : randomBytes(4).toString('hex');
  await db.insertInto('settings').values({ key: 'installation', value: made })
    .onConflict((oc) => oc.column('key').doNothing()).execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', 'installation').executeTakeFirstOrThrow();
  return { id: row.value, legacyId: legacy };
}

/** Whether a container's `essh.instance` label says it is this installation's. */
export function isOurs(installation: Installation, label: string | undefined): boolean {
  return label !== undefined && (label === installation.id || label === installation.legacyId);
}
