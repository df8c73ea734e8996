import { randomUUID } from 'node:crypto';
import type { Db } from './db.js';

/**
 * This installation's id, made once per database. Its containers carry it as a label, so that the
 * reconciler of one installation never touches another's containers on a shared engine.
 */
export async function instanceId(db: Db): Promise<string> {
  const existing = await db.selectFrom('settings').select('value').where('key', '=', 'instance_id').executeTakeFirst();
  if (existing) return existing.value;
  await db
    .insertInto('settings')
    .values({ key: 'instance_id', value: randomUUID() })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', 'instance_id').executeTakeFirstOrThrow();
  return row.value;
}
