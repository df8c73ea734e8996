import { readFileSync } from 'node:fs';
import { Client, Connection, isGrpcServiceError, type ConnectionLike, type ConnectionOptions } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_KEYS } from '../shapes/session-workflow.js';
import { DefaultLogger, NativeConnection, Runtime, type LogLevel, type NativeConnectionOptions } from '@temporalio/worker';
import type { Logger } from './log.js';
import type { Config } from './config.js';
import { freeLoopbackPort } from './free-port.js';

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
  const options: ConnectionOptions = {
    address: temporalAddress(t), ...securityOptions(t),
    // gRPC's reconnect backoff grows to 2 minutes while the server is away: the portal's heartbeats,
    // which have a deadline, would then reach a server that is back only that much later. Seen: 8–14 s
    // after a 12 s outage on a loaded machine. One attempt every 2 s at most costs nothing.
    channelArgs: { 'grpc.max_reconnect_backoff_ms': 2000 },
  };
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
  // Picked below the ephemeral range: the SDK binds it only when its runtime is first used, later, and a
  // port from that range can meanwhile go to an outgoing connection (EADDRINUSE at the first connect,
  // seen once in a full run of the suite).
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

/**
 * The server's IndexedValueType numbers (temporal.api.enums.v1) and the `temporal` CLI's names for
 * them: a dozen constants rather than a dependency on the generated protobuf package.
 */
const INDEXED_TYPES: Record<number, string> = { 1: 'Text', 2: 'Keyword', 3: 'Int', 4: 'Double', 5: 'Bool', 6: 'Datetime', 7: 'KeywordList' };
const SA_TYPES: Record<string, { cli: string; indexed: number }> = { KEYWORD: { cli: 'Keyword', indexed: 2 }, INT: { cli: 'Int', indexed: 3 } };
const cliTypeOf = (indexed: unknown): string => {
  if (typeof indexed === 'number') return INDEXED_TYPES[indexed] ?? String(indexed);
  // A name, should the enum come decoded as one (INDEXED_VALUE_TYPE_KEYWORD_LIST → KeywordList).
  const words = String(indexed).replace(/^INDEXED_VALUE_TYPE_/, '').toLowerCase().split('_');
  return words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');
};

/** The failure of a start-up that found the namespace without essh's search attributes and could not add them. */
export class SearchAttributesMissing extends Error {}

/**
 * Makes sure the namespace has essh's search attributes (CONTRACT §6): those missing are added through
 * the operator service when the server lets us (a self-hosted server with an unrestricted client);
 * when it does not (permission denied, a namespace the SDK cannot change, such as Temporal Cloud's),
 * start-up stops with the exact `temporal operator search-attribute create` commands an operator runs.
 * An attribute of the same name with another type is never changed: start-up stops, naming it.
 */
export async function ensureSearchAttributes(
  connection: Pick<ConnectionLike, 'operatorService'>,
  t: Pick<TemporalConfig, 'namespace'> & { address?: string },
): Promise<{ added: string[] }> {
  const { namespace } = t;
  const wanted = SEARCH_ATTRIBUTE_KEYS.map((k) => ({ name: k.name, ...SA_TYPES[k.type]! }));
  let existing: Record<string, unknown>;
  try {
    existing = (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  } catch (err) {
    throw new SearchAttributesMissing(
      `could not read the search attributes of namespace ${namespace} (${grpcProblem(err)}), so essh cannot tell whether its own ` +
        `(${wanted.map((w) => w.name).join(', ')}) are there. Check TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE and the credentials' permissions.`,
    );
  }
  const clash = wanted.filter((w) => w.name in existing && cliTypeOf(existing[w.name]) !== w.cli);
  if (clash.length) {
    throw new SearchAttributesMissing(
      `namespace ${namespace} has ${clash.map((w) => `${w.name} as ${cliTypeOf(existing[w.name])} (essh needs ${w.cli})`).join(', ')}: ` +
        'a search attribute\'s type cannot be changed. Use another namespace (TEMPORAL_NAMESPACE), or remove the attribute there first.',
    );
  }
  const missing = wanted.filter((w) => !(w.name in existing));
  if (!missing.length) return { added: [] };
  try {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((w) => [w.name, w.indexed])),
    });
  } catch (err) {
    throw new SearchAttributesMissing(
      `namespace ${namespace} lacks essh's search attributes ${missing.map((w) => w.name).join(', ')}, and essh may not add them ` +
        `(${grpcProblem(err)}). An operator adds them with:\n` +
        searchAttributeCommands(missing, { namespace, address: t.address }).map((c) => `  ${c}`).join('\n') +
        '\n(with the same TLS or API key options as essh\'s; on Temporal Cloud, through the Cloud UI or `tcld namespace search-attributes add`), then starts essh again.',
    );
  }
  return { added: missing.map((w) => w.name) };
}

/**
 * The `temporal operator search-attribute create` commands that add `attrs`, one per attribute: the
 * CLI pairs each --name with a --type of its own (one --type for several names adds only the first).
 */
export function searchAttributeCommands(attrs: { name: string; cli: string }[], t: { namespace: string; address?: string }): string[] {
  return attrs.map((a) => ['temporal operator search-attribute create', ...(t.address ? [`--address ${t.address}`] : []),
    `--namespace ${t.namespace}`, `--name ${a.name}`, `--type ${a.cli}`].join(' '));
}

/** gRPC status names (grpc-js's enum, without importing it for a dozen names). */
const grpcStatus: Record<number, string> = {
  1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 6: 'ALREADY_EXISTS',
  7: 'PERMISSION_DENIED', 8: 'RESOURCE_EXHAUSTED', 9: 'FAILED_PRECONDITION', 12: 'UNIMPLEMENTED', 13: 'INTERNAL',
  14: 'UNAVAILABLE', 16: 'UNAUTHENTICATED',
};

function grpcProblem(err: unknown): string {
  if (isGrpcServiceError(err)) return `${grpcStatus[err.code] ?? err.code}: ${err.details || err.message}`;
  return (err as Error)?.message ?? String(err);
}
