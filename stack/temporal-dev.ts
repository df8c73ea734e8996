import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_KEYS } from '../workflows/definitions.js';
import { tightenSqliteFiles } from '../lib/db.js';

export interface DevServer {
  address: string;
  uiUrl: string;
  stop(): Promise<void>;
}

/**
 * Eager workflow start, which the server leaves off unless told: a session's first workflow task comes
 * back with the start request to the API's own worker, a dispatch less on the way to the container.
 */
export const EAGER_START_ARGS = ['--dynamic-config-value', 'system.enableEagerWorkflowStart=true'];

const typeNames: Record<string, string> = { KEYWORD: 'Keyword', INT: 'Int' };

/**
 * The embedded Temporal: `temporal server start-dev` on a SQLite file under the data dir, with the Web
 * UI and essh's search attributes. Started again on the same file, its workflows carry on.
 */
export async function startDevServer(opts: { binary: string; dataDir: string; port: number; uiPort: number; namespace: string }): Promise<DevServer> {
  // The server's workflow histories hold what sessions were and who ran them: its user's alone,
  // whatever umask the caller has. The file cannot be made in advance (the server sets up its schema
  // only in a file that does not exist yet), so the server runs under umask 077 (below).
  const dbFile = path.join(opts.dataDir, 'temporal.sqlite');
  tightenSqliteFiles(dbFile);
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(opts.port),
    '--ui-port', String(opts.uiPort),
    '--db-filename', dbFile,
    '--namespace', opts.namespace,
    '--log-level', 'warn',
    ...EAGER_START_ARGS,
    // A write-ahead log, synced at checkpoints: every workflow step is a write, and the rollback
    // journal's sync per write was a large part of the time to a session's container (see bench/).
    '--sqlite-pragma', 'journal_mode=wal',
    '--sqlite-pragma', 'synchronous=normal',
    ...SEARCH_ATTRIBUTE_KEYS.flatMap((k) => ['--search-attribute', `${k.name}=${typeNames[k.type]}`]),
  ];
  const logFile = createWriteStream(path.join(opts.dataDir, 'temporal.log'), { flags: 'a', mode: 0o600 });
  // Node cannot give a child a umask of its own: a shell sets it and then becomes the server.
  const child: ChildProcess = spawn('/bin/sh', ['-c', 'umask 077 && exec "$0" "$@"', opts.binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(logFile);
  child.stderr?.pipe(logFile);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.once('error', () => undefined);

  const address = `127.0.0.1:${opts.port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const early = await Promise.race([exited, new Promise((r) => setTimeout(() => r('waiting'), 250))]);
    if (early !== 'waiting') {
      throw new Error(`the Temporal dev server exited (code ${early}); see ${path.join(opts.dataDir, 'temporal.log')}`);
    }
    try {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      await conn.workflowService.describeNamespace({ namespace: opts.namespace });
      await conn.close();
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`the Temporal dev server did not answer on ${address} within 60 s: ${(err as Error).message}`);
      }
    }
  }
  return {
    address,
    uiUrl: `http://127.0.0.1:${opts.uiPort}`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
      logFile.end();
    },
  };
}
