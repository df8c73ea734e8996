// Runs inside the capture thread (see CaptureThread): the CaptureAgent with its own connections.
import { parentPort, workerData } from 'node:worker_threads';
import { engineOf, openDatabase } from '../lib/db.js';
import { openDocker } from '../lib/docker.js';
import { createLogger } from '../lib/log.js';
import { CaptureAgent } from './capture.js';
import type { CaptureThreadOptions } from './capture-thread.js';

const opts = workerData as CaptureThreadOptions;
const port = parentPort!;
const log = createLogger(opts.logLevel).child({ thread: 'capture' });
const db = openDatabase(opts.databaseUrl);
const agent = new CaptureAgent({
  docker: openDocker(), db, engine: engineOf(opts.databaseUrl), instanceId: opts.instanceId, intervalS: opts.intervalS, log,
});

try {
  await agent.start();
  port.postMessage({ type: 'ready' });
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message });
  process.exit(1);
}

port.on('message', (m: { type: 'wait'; id: number; operationId: number; timeoutMs: number } | { type: 'stop' }) => {
  if (m.type === 'wait') {
    agent.waitForCaptureEnd(m.operationId, m.timeoutMs).then(
      (complete) => port.postMessage({ type: 'waited', id: m.id, complete }),
      (err) => {
        log.warn({ err, operationId: m.operationId }, 'waiting for a capture to end failed');
        port.postMessage({ type: 'waited', id: m.id, complete: false });
      },
    );
  } else {
    void agent.stop().finally(async () => {
      await db.destroy().catch(() => undefined);
      port.close();
    });
  }
});
