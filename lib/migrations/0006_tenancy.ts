import { migration } from './migration.js';

/**
 * What an operator grants an account (CONTRACT §3): the stacks its apps may use and the image
 * repositories they may run; and the apps' warm pools (CONTRACT §7).
 */
export const tenancyMigrations = migration('0006_tenancy', async (db, { fk }) => {
  await db.schema.alterTable('accounts').addColumn('image_prefixes', 'text').execute();
  // Accounts made before grants existed keep the repositories their apps already run, and no other.
  const used = await db.selectFrom('apps').select(['account_id', 'image']).execute();
  const byAccount = new Map<number, Set<string>>();
  for (const u of used) {
    const set = byAccount.get(Number(u.account_id)) ?? new Set<string>();
    set.add(imageRepository(u.image));
    byAccount.set(Number(u.account_id), set);
  }
  await db.updateTable('accounts').set({ image_prefixes: '[]' }).execute();
  for (const [id, repos] of byAccount) {
    await db.updateTable('accounts').set({ image_prefixes: JSON.stringify([...repos].sort()) }).where('id', '=', id).execute();
  }
  await db.schema.createTable('account_stacks')
    .addColumn('account_id', fk, (c) => c.notNull().references('accounts.id'))
    .addColumn('stack_id', fk, (c) => c.notNull().references('stacks.id'))
    .addPrimaryKeyConstraint('account_stacks_pk', ['account_id', 'stack_id'])
    .execute();
  await db.schema.alterTable('apps').addColumn('warm_pool', 'integer', (c) => c.notNull().defaultTo(0)).execute();
});

/**
 * An image's repository (no tag, no digest), as domain/grants.ts's imageRepository said when this
 * migration was written: a migration keeps its own copy, so that it runs the same on every database
 * whatever the grants become.
 */
function imageRepository(image: string): string {
  const noDigest = image.split('@')[0]!;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}
