import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
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
 * Installs the Temporal SDK's runtime for this process (the SDK allows one per process; a second call,
 * a test starting a second essh runtime, keeps the first): its log lines go through our logger at our
 * level, and, with `metricsPort`, its metrics (workflow task latencies, activity failures, sticky
 * cache, pollers, slots…) are exported by the SDK's own Prometheus exporter on 127.0.0.1 (it has no
 * authentication), which essh's /metrics serves on (`temporalSdkMetrics`). The SDK's own names and
 * units (`temporal_` prefix, histograms in milliseconds), so that Temporal's SDK dashboards work as they are.
 */
export async function installTemporalRuntime(log: Logger, opts: { metricsPort?: number } = {}): Promise<void> {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = (log.level === 'silent' ? 'ERROR' : log.level.toUpperCase()) as LogLevel;
  const sdkLevel: LogLevel = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'].includes(level) ? level : 'WARN';
  const port = opts.metricsPort === undefined ? undefined : opts.metricsPort || (await freeLoopbackPort());
  try {
    Runtime.install({
      logger: new DefaultLogger(sdkLevel === 'INFO' ? 'WARN' : sdkLevel, (entry) => {
        // Host workers run activities only, by design: that warning is expected, not a problem.
        if (entry.message.startsWith('No workflows registered')) return;
        const fn = entry.level === 'ERROR' ? log.error.bind(log) : entry.level === 'WARN' ? log.warn.bind(log) : log.debug.bind(log);
        fn({ sdk: entry.meta }, entry.message);
      }),
      ...(port !== undefined
        ? { telemetryOptions: { metrics: { prometheus: { bindAddress: `127.0.0.1:${port}` } } } }
        : {}),
    });
    if (port !== undefined) sdkMetricsUrl = `http://127.0.0.1:${port}/metrics`;
  } catch (err) {
    // Already installed by someone else in this process: keep theirs. A port taken is a real problem.
    if (port !== undefined && /address|bind|in use/i.test((err as Error).message)) {
      throw new Error(`the Temporal SDK's metrics exporter could not listen on 127.0.0.1:${port} (${(err as Error).message}); set ESSH_TEMPORAL_METRICS_PORT to a free port, or 0`);
    }
  }
}
let runtimeInstalled = false;
let sdkMetricsUrl: string | undefined;

/** Sends the Temporal SDK's own log lines through our logger (no metrics): for programs that only replay. */
export function routeTemporalLogs(log: Logger): Promise<void> {
  return installTemporalRuntime(log);
}

/**
 * The Temporal SDK's metrics of this process in the Prometheus text format, read from its exporter on
 * loopback; empty where no worker runs (an API-only process), a comment when the exporter does not answer.
 */
export async function temporalSdkMetrics(): Promise<string> {
  if (!sdkMetricsUrl) return '';
  try {
    const res = await fetch(sdkMetricsUrl, { signal: AbortSignal.timeout(3000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const text = await res.text();
    return text.endsWith('\n') || text === '' ? text : `${text}\n`;
  } catch (err) {
    return `# the Temporal SDK's metrics exporter did not answer: ${(err as Error).message.replace(/\s+/g, ' ')}\n`;
  }
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.once('error', reject);
  });
}

