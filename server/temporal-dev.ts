import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { freeLoopbackPort } from '../lib/free-port.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../shapes/session-workflow.js';
import { tightenSqliteFiles } from '../lib/db.js';

export interface DevServer {
  address: string;
  port: number;
  uiPort: number;
  uiUrl: string;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  binary: string;
  /** Holds its log (`temporal.log`) and, unless `inMemory`, its SQLite file. */
  dataDir: string;
  /**
   * Fixed ports (the embedded stack's configured ones, or a server started again where its clients
   * expect it). Without them, free loopback ports are picked, and picked again if something else
   * took one before the server could bind it.
   */
  port?: number;
  uiPort?: number;
  namespace: string;
  /** Workflows lost when it stops (a server nothing needs to survive). */
  inMemory?: boolean;
  /**
   * A server as an operator runs one, without essh's search attributes and dynamic config (the test of
   * essh against an external Temporal).
   */
  withoutEsshSettings?: boolean;
}

/**
 * The server settings essh relies on, which the server leaves off unless told (a cluster of one's own
 * needs the same dynamic config: docs/deploy.md):
 * - eager workflow start: a session's first workflow task comes back with the start request to the
 *   API's own worker, a dispatch less on the way to the container;
 * - polls completed on a worker's shutdown: a worker replica sent SIGTERM lets its open polls end
 *   (the server answers them) rather than cutting them, since a workflow task the server had handed to
 *   a cut poll was lost and timed out 10 s later (seen in test/rolling-restart.test.ts, 5 runs in 15).
 */
export const SERVER_DYNAMIC_CONFIG = [
  '--dynamic-config-value', 'system.enableEagerWorkflowStart=true',
  '--dynamic-config-value', 'frontend.enableCancelWorkerPollsOnShutdown=true',
];

const typeNames: Record<string, string> = { KEYWORD: 'Keyword', INT: 'Int' };

/** How long a live server may take to answer before it is given up on (seen: 0.4–2 s at a load of 15). */
const ANSWER_WITHIN_MS = 60_000;
/**
 * Attempts when a port was taken before the server bound it: one picked here (with new ones), or one
 * the server picks itself for its internal services (with the same ones).
 */
const PORT_ATTEMPTS = 3;

/** Where a start stands, for the message when it goes wrong. */
const PHASE = {
  starting: 'its process starting (nothing listens on the port yet)',
  listening: 'the port accepts connections, gRPC does not answer yet',
  answering: 'gRPC answers, the namespace is not there yet',
} as const;

/**
 * The embedded Temporal: `temporal server start-dev` on a SQLite file under the data dir, with the Web
 * UI and essh's search attributes. Started again on the same file, its workflows carry on.
 *
 * It is ready when it answers DescribeNamespace. Until then its process is watched: a server that exits
 * is reported at once with its exit status and the end of its log (rather than polled for until a
 * deadline), and one that could not bind a port is started again (on new ones where they were picked here).
 */
export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freeLoopbackPort());
    const uiPort = opts.uiPort ?? (await freeLoopbackPort());
    try {
      return await startOnce(opts, port, uiPort);
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt === PORT_ATTEMPTS) throw err;
    }
  }
}

class PortTaken extends Error {}

async function startOnce(opts: DevServerOptions, port: number, uiPort: number): Promise<DevServer> {
  const logPath = path.join(opts.dataDir, 'temporal.log');
  // The server's workflow histories hold what sessions were and who ran them: its user's alone,
  // whatever umask the caller has. The file cannot be made in advance (the server sets up its schema
  // only in a file that does not exist yet), so the server runs under umask 077 (below).
  const dbFile = path.join(opts.dataDir, 'temporal.sqlite');
  if (!opts.inMemory) tightenSqliteFiles(dbFile);
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(port),
    '--ui-port', String(uiPort),
    ...(opts.inMemory ? [] : ['--db-filename', dbFile]),
    '--namespace', opts.namespace,
    '--log-level', 'warn',
    ...(opts.withoutEsshSettings ? [] : [
      ...SERVER_DYNAMIC_CONFIG,
      // A write-ahead log, synced at checkpoints: every workflow step is a write, and the rollback
      // journal's sync per write was a large part of the time to a session's container (see bench/).
      '--sqlite-pragma', 'journal_mode=wal',
      '--sqlite-pragma', 'synchronous=normal',
      ...SEARCH_ATTRIBUTE_KEYS.flatMap((k) => ['--search-attribute', `${k.name}=${typeNames[k.type]}`]),
    ]),
  ];
  const logFile = createWriteStream(logPath, { flags: 'a', mode: 0o600 });
  // Node cannot give a child a umask of its own: a shell sets it and then becomes the server.
  const child: ChildProcess = spawn('/bin/sh', ['-c', 'umask 077 && exec "$0" "$@"', opts.binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(logFile);
  child.stderr?.pipe(logFile);
  // The end of what this start printed, for the message when it goes wrong (the log file may hold earlier starts').
  let said = '';
  const keep = (chunk: Buffer) => (said = (said + chunk.toString('utf8')).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  // 'close' comes once its output has been read to the end as well.
  const exited = new Promise<string>((resolve) => {
    child.once('close', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit code ${code}`));
    child.once('error', (err) => resolve(`could not be run: ${err.message}`));
  });
  const lastLines = () => said.trim().split('\n').slice(-20).join('\n') || '(nothing)';

  const address = `127.0.0.1:${port}`;
  const started = Date.now();
  let phase: (typeof PHASE)[keyof typeof PHASE] = PHASE.starting;
  let last = '';
  for (;;) {
    const ended = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 250))]);
    if (ended !== null) {
      const log = lastLines();
      logFile.end();
      const message = `the Temporal dev server (${address}, UI port ${uiPort}) ended before it answered (${ended}) ` +
        `after ${((Date.now() - started) / 1000).toFixed(1)} s, while ${phase}; it said:\n${log}`;
      throw /address already in use/.test(log) ? new PortTaken(message) : new Error(message);
    }
    if (phase === PHASE.starting && (await accepts(port))) phase = PHASE.listening;
    if (phase !== PHASE.starting) {
      try {
        const conn = await Connection.connect({ address, connectTimeout: 2000 });
        try {
          phase = PHASE.answering;
          await conn.workflowService.describeNamespace({ namespace: opts.namespace });
          break;
        } finally {
          await conn.close();
        }
      } catch (err) {
        last = (err as Error).message;
      }
    }
    if (Date.now() - started > ANSWER_WITHIN_MS) {
      child.kill('SIGKILL');
      await exited;
      logFile.end();
      throw new Error(`the Temporal dev server on ${address} is running but did not answer within ${ANSWER_WITHIN_MS / 1000} s, ` +
        `still at: ${phase}${last ? ` (last: ${last})` : ''}; it said:\n${lastLines()}`);
    }
  }
  return {
    address,
    port,
    uiPort,
    uiUrl: `http://127.0.0.1:${uiPort}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killer);
      }
      logFile.end();
    },
  };
}

/** Whether something accepts TCP connections on this loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(2000, () => socket.destroy(new Error('timeout')));
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
