import { sql, type Transaction } from 'kysely';
import type { Database, Db } from '../lib/db.js';

/** How many of each thing one owner may have (docs/threat-model.md): enough for real use, bounded against abuse. */
export const CAPS = {
  drainsPerAccount: 20,
  redactionRulesPerAccount: 20,
  apiTokensPerUser: 20,
  sshKeysPerUser: 20,
} as const;

/**
 * Inserts a row only while its owner has fewer than `cap` of them: the count and the insert are one
 * transaction that first writes the owner's row (a no-op update), which serialises them per owner on
 * both databases (PostgreSQL's row lock, SQLite's write lock). Concurrent requests never pass the cap.
 */
export async function insertWithinCap<T>(
  db: Db,
  owner: { table: 'accounts' | 'users'; id: number },
  cap: number,
  count: (trx: Transaction<Database>) => Promise<number>,
  refuse: () => Error,
  insert: (trx: Transaction<Database>) => Promise<T>,
): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await trx.updateTable(owner.table).set({ id: sql`id` }).where('id', '=', owner.id).execute();
    if ((await count(trx)) >= cap) throw refuse();
    return insert(trx);
  });
}
