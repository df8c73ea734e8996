// `npm run bench`: every benchmark module against one throw-away essh stack; `npm run bench -- NAME…`
// runs only the named ones. Other parts add their module to `modules` below.
import { cliStartup } from './cli-startup.js';
import { startBenchEnv } from './env.js';
import { createThroughput } from './create-throughput.js';
import { drainThroughput } from './drain-throughput.js';
import { echoVsSshd } from './echo-vs-sshd.js';
import { fileTransfer } from './file-transfer.js';
import { fleetPlacement } from './fleet-placement.js';
import { hostUpgrade } from './host-upgrade.js';
import { liveSessions } from './live-sessions.js';
import { observerDelay } from './observer-delay.js';
import { portalAbuse } from './portal-abuse.js';
import { portalEcho } from './portal-echo.js';
import { portalPrompt } from './portal-prompt.js';
import { portalThroughput } from './portal-throughput.js';
import { redactionIsolation } from './redaction-isolation.js';
import { sessionReady } from './session-ready.js';
import { slotAfterBulk } from './slot-after-bulk.js';
import { formatTable } from './stats.js';
import type { BenchModule, BenchRow, StandaloneBenchModule } from './types.js';

const modules: (BenchModule | StandaloneBenchModule)[] = [
  sessionReady, portalPrompt, portalThroughput, slotAfterBulk, portalEcho, echoVsSshd, portalAbuse, drainThroughput, createThroughput, liveSessions, redactionIsolation, cliStartup,
  fleetPlacement, hostUpgrade, fileTransfer, observerDelay,
];

async function main() {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const unknown = wanted.filter((w) => !modules.some((m) => m.name === w));
  if (unknown.length) {
    console.error(`unknown benchmark ${unknown.join(', ')}; known: ${modules.map((m) => m.name).join(', ')}`);
    process.exit(2);
  }
  const selected = wanted.length ? modules.filter((m) => wanted.includes(m.name)) : modules;
  const standalone = { progress: (line: string) => process.stderr.write(`bench: ${line}\n`) };
  const env = selected.every((m) => 'standalone' in m) ? null : await startBenchEnv();
  const rows: BenchRow[] = [];
  let failed = false;
  try {
    for (const m of selected) {
      standalone.progress(`${m.name}: ${m.description}`);
      try {
        rows.push(...(await ('standalone' in m ? m.run(standalone) : m.run(env!))));
      } catch (err) {
        failed = true;
        console.error(`bench ${m.name} failed: ${(err as Error).stack ?? err}`);
      }
    }
  } finally {
    await env?.stop();
  }
  console.log(formatTable(rows));
  process.exit(failed ? 1 : 0);
}

void main();
