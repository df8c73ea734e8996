// One of several processes sharing a SQLite file (test/sqlite-writers.test.ts): runs transactions
// that read, then write, as the services do, and prints how many failed.
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { openDatabase } from '../../lib/db.js';

const [file, rounds] = [process.argv[2]!, Number(process.argv[3])];
const db = openDatabase(`sqlite:${file}`);
let failed = 0;
let firstError = '';
for (let i = 0; i < rounds; i++) {
  try {
    await db.transaction().execute(async (trx) => {
      const { n } = (await sql<{ n: number }>`select count(*) as n from counter`.execute(trx)).rows[0]!;
      // Another process commits here, now and then: this one's snapshot is then older than the file.
      await sleep(1);
      await sql`insert into counter (n) values (${Number(n) + 1})`.execute(trx);
    });
  } catch (err) {
    failed++;
    firstError ||= (err as Error).message;
  }
}
await db.destroy();
process.stdout.write(JSON.stringify({ failed, firstError }));
