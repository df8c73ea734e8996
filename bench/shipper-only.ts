// The host shipper's throughput alone, without Temporal or Docker: `npx tsx bench/shipper-only.ts`
// (ESSH_BENCH_DRAIN_MB, default 50; ESSH_BENCH_DRAIN_PACE_MBPS, default 0 and 20: the journal written
// at full speed, then at the portal's pace). A temp SQLite database and data dir.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../lib/db.js';
import { migrate } from '../lib/migrations/index.js';
import { loadSecretBox } from '../lib/secrets.js';
import { benchShipperThroughput } from './drains.js';

const megabytes = Number(process.env.ESSH_BENCH_DRAIN_MB ?? 50);
const paces = (process.env.ESSH_BENCH_DRAIN_PACE_MBPS ?? '0,20').split(',').map(Number);
const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-shipper-only-'));
const db = openDatabase(path.join(dir, 'essh.sqlite'));
try {
  await migrate(db, 'sqlite');
  const secrets = await loadSecretBox({ dataDir: dir });
  for (const pacedMBps of paces) {
    const r = await benchShipperThroughput({ db, secrets, megabytes, pacedMBps });
    console.log(JSON.stringify(r));
  }
} finally {
  await db.destroy();
  await rm(dir, { recursive: true, force: true });
}
