import { readFileSync } from 'node:fs';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type LogLevel, type NativeConnectionOptions } from '@temporalio/worker';
import type { Logger } from './log.js';
import type { Config } from './config.js';

type TemporalConfig = Config['temporal'];

/** TLS (mTLS when a client pair is given) and API-key options shared by client and worker connections. */
function securityOptions(t: TemporalConfig) {
  const tls = t.tls
    ? {
        clientCertPair:
          t.tls.cert && t.tls.key ? { crt: readFileSync(t.tls.cert), key: readFileSync(t.tls.key) } : undefined,
        serverRootCACertificate: t.tls.ca ? readFileSync(t.tls.ca) : undefined,
      }
    : t.apiKey
      ? true // an API key is only accepted over TLS
      : undefined;
  return { tls, apiKey: t.apiKey };
}

export function temporalAddress(t: TemporalConfig): string {
  return t.address ?? '127.0.0.1:7233';
}

export async function connectClient(t: TemporalConfig): Promise<Client> {
  const options: ConnectionOptions = { address: temporalAddress(t), ...securityOptions(t) };
  const connection = await Connection.connect(options);
  return new Client({ connection, namespace: t.namespace });
}

export async function connectWorker(t: TemporalConfig): Promise<NativeConnection> {
  const options: NativeConnectionOptions = { address: temporalAddress(t), ...securityOptions(t) };
  return NativeConnection.connect(options);
}

/**
 * Sends the Temporal SDK's own log lines through our logger, at our level. The SDK allows one Runtime
 * per process, so a second call (a test starting a second runtime) keeps the first.
 */
export function routeTemporalLogs(log: Logger) {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = (log.level === 'silent' ? 'ERROR' : log.level.toUpperCase()) as LogLevel;
  const sdkLevel: LogLevel = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'].includes(level) ? level : 'WARN';
  try {
    Runtime.install({
      logger: new DefaultLogger(sdkLevel === 'INFO' ? 'WARN' : sdkLevel, (entry) => {
        // Host workers run activities only, by design: that warning is expected, not a problem.
        if (entry.message.startsWith('No workflows registered')) return;
        const fn = entry.level === 'ERROR' ? log.error.bind(log) : entry.level === 'WARN' ? log.warn.bind(log) : log.debug.bind(log);
        fn({ sdk: entry.meta }, entry.message);
      }),
    });
  } catch {
    // Already installed by someone else in this process: keep theirs.
  }
}
let runtimeInstalled = false;
