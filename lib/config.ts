import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { HOST_ID_PATTERN } from '../shapes/enumerations.js';
import { DEFAULT_EGRESS_DENY, parseCidrList, type EgressPolicy } from './networks.js';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const port = z.coerce.number().int().min(0).max(65535);
const seconds = z.coerce.number().positive();

/**
 * A host silent this long is lost (ESSH_HOST_STALE_S): with a report every 15 s (ESSH_RECONCILE_INTERVAL_S)
 * that is three missed, and with the sweep every 10 s its sessions end within 55 s of its last report (and a
 * workflow task), inside the minute issue 19 asks for.
 */
export const DEFAULT_HOST_STALE_S = 45;

function startups(value: string): Pick<PortalLimits, 'earlyDropStart' | 'earlyDropRate' | 'maxUnauthenticated'> {
  const [earlyDropStart, earlyDropRate, maxUnauthenticated] = value.split(':').map(Number) as [number, number, number];
  return { earlyDropStart, earlyDropRate, maxUnauthenticated };
}

const envSchema = z.object({
  ESSH_DATA_DIR: z.string().default(path.join(projectRoot, '.data')),
  ESSH_API_HOST: z.string().default('127.0.0.1'),
  ESSH_API_PORT: port.default(3000),
  /**
   * The reverse proxies whose X-Forwarded-For the API believes (express's `trust proxy`), as addresses or
   * CIDR ranges; none by default, so the audit trail records the TCP peer.
   */
  ESSH_TRUST_PROXY: z.string().default(''),
  ESSH_SSH_HOST: z.string().default('127.0.0.1'),
  ESSH_SSH_PORT: port.default(2222),
  /** How often the SSH portal tells a session's workflow that its client is still there. */
  ESSH_PORTAL_HEARTBEAT_S: seconds.default(10),
  /**
   * How long the portal holds sessions printing in bulk after a client types (portal/output-pacing.ts),
   * so that the keystroke's echo finds the CPUs free; 0: never.
   */
  ESSH_PORTAL_INTERACTIVE_MS: z.coerce.number().int().min(0).max(500).default(50),
  /** After a portal crash: how long its successor keeps the sessions of the clients it had for them to come back. */
  ESSH_REATTACH_WINDOW_S: seconds.default(120),
  /**
   * An upgrade (lib/handover.ts): how long a host process sent SIGTERM keeps serving the clients it has
   * before it exits anyway (its successor's reattach window then keeps their sessions while they come back).
   */
  ESSH_UPGRADE_DRAIN_S: z.coerce.number().min(0).default(86_400),
  /** How long a new host process waits for the ports its predecessor still holds (until that one gets SIGTERM). */
  ESSH_UPGRADE_BIND_WAIT_S: seconds.default(300),
  ESSH_PUBLIC_HOST: z.string().optional(),
  /** The SSH portal's limits before authentication (portal/guard.ts). */
  ESSH_PORTAL_MAX_CONNECTIONS: z.coerce.number().int().positive().optional(),
  ESSH_PORTAL_AUTH_TIMEOUT_S: seconds.optional(),
  /** sshd's MaxStartups for connections still authenticating: `start:rate:full`. */
  ESSH_PORTAL_MAX_STARTUPS: z.string().regex(/^\d+:\d+:\d+$/, 'start:rate:full, three whole numbers as sshd\'s MaxStartups (say 100:30:200)').optional(),
  /** An authenticated portal connection with no channel open this long is closed. */
  ESSH_PORTAL_IDLE_TIMEOUT_S: seconds.optional(),
  ESSH_PORTAL_MAX_CONNECTIONS_PER_USER: z.coerce.number().int().positive().optional(),
  /**
   * The portal's public host key (its .pub line), announced in `connect` blocks; by default read from
   * the data dir, which suits an API that shares it with the portal.
   */
  ESSH_PORTAL_HOST_KEY: z.string().optional(),
  /** Seals drain tokens and URLs in the database (base64 of 32 bytes); by default a key file in the data dir. */
  ESSH_SECRETS_KEY: z.string().optional(),
  /** Keys being rotated out (comma-separated base64): what they sealed still opens, and is sealed again under the current key at start. */
  ESSH_SECRETS_KEY_PREVIOUS: z.string().optional(),
  DATABASE_URL: z.string().optional(),
  DOCKER_HOST: z.string().optional(),
  TEMPORAL_ADDRESS: z.string().optional(),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_TLS_CERT: z.string().optional(),
  TEMPORAL_TLS_KEY: z.string().optional(),
  TEMPORAL_TLS_CA: z.string().optional(),
  TEMPORAL_API_KEY: z.string().optional(),
  TEMPORAL_UI_PORT: port.default(8233),
  /** Port of the embedded dev server (only when TEMPORAL_ADDRESS is not set). */
  ESSH_TEMPORAL_DEV_PORT: port.default(7233),
  ESSH_TEMPORAL_BIN: z.string().optional(),
  ESSH_ADMIN_TOKEN: z.string().min(16, 'ESSH_ADMIN_TOKEN must be at least 16 characters').optional(),
  /** Stacks whose containers this process's Docker engine serves (comma separated). */
  ESSH_HOST_STACKS: z.string().default('local'),
  /** This host worker's identity, written on the containers it creates (default: the hostname). */
  ESSH_HOST_ID: z.string().regex(HOST_ID_PATTERN, 'ESSH_HOST_ID must be 1–200 letters, digits, ".", "_" or "-", starting with a letter or digit').optional(),
  /** The most live sessions placed on this host at once (docs/fleet.md). */
  ESSH_HOST_MAX_SESSIONS: z.coerce.number().int().positive().default(500),
  ESSH_HEARTBEAT_TIMEOUT_S: seconds.default(30),
  ESSH_CONNECT_TIMEOUT_S: seconds.default(300),
  ESSH_STOP_GRACE_S: z.coerce.number().int().min(0).default(10),
  ESSH_PIDS_LIMIT: z.coerce.number().int().positive().default(512),
  ESSH_SESSION_TOKEN_TTL_S: seconds.default(300),
  /** How long an API token issued without `expires_at` lasts, in seconds; 0: it does not expire. */
  ESSH_TOKEN_DEFAULT_TTL_S: z.coerce.number().int().min(0).max(10 * 365 * 24 * 3600, 'at most 10 years').default(0),
  ESSH_RECONCILE_INTERVAL_S: seconds.default(15),
  /** A host that has not reported (every ESSH_RECONCILE_INTERVAL_S) for this long is lost: its sessions end. */
  ESSH_HOST_STALE_S: seconds.default(DEFAULT_HOST_STALE_S),
  /** How often the `worker` role looks for lost hosts' sessions (worker/host-loss-sweep.ts). */
  ESSH_HOST_LOSS_SWEEP_S: seconds.default(10),
  /** Log drains: the longest wait between two delivery attempts, and the most events and bytes per request. */
  ESSH_DRAIN_BACKOFF_CAP_S: seconds.default(60),
  ESSH_DRAIN_BATCH_EVENTS: z.coerce.number().int().min(1).max(100_000).default(20_000),
  ESSH_DRAIN_BATCH_BYTES: z.coerce.number().int().min(4096).max(64 * 1024 * 1024).default(2 * 1024 * 1024),
  /**
   * Drains may send to loopback, private, link-local, CGNAT and metadata addresses (refused by default:
   * a drain must not become a way into the installation's own network). For tests and closed networks.
   */
  ESSH_DRAINS_ALLOW_PRIVATE: z.enum(['0', '1', 'true', 'false']).default('0'),
  /** The host's internal endpoint (recordings for the API's processes): address and port (0: any free one). */
  ESSH_HOST_INTERNAL_HOST: z.string().default('127.0.0.1'),
  ESSH_HOST_INTERNAL_PORT: port.default(0),
  /** The URL the API's processes use to reach it, when not http://<ESSH_HOST_INTERNAL_HOST>:<port> (a proxy, a NAT). */
  ESSH_HOST_INTERNAL_URL: z.string().url().optional(),
  /** PEM certificate and key files: the host's internal endpoint speaks HTTPS. */
  ESSH_HOST_INTERNAL_TLS_CERT: z.string().optional(),
  ESSH_HOST_INTERNAL_TLS_KEY: z.string().optional(),
  /** PEM CA file the API's processes trust for the hosts' https:// internal endpoints (default: the system's CAs). */
  ESSH_HOST_INTERNAL_TLS_CA: z.string().optional(),
  /** How long a session's journal (drains' queue, recording) is kept after it ended; 0: forever. */
  ESSH_EVENT_RETENTION_S: z.coerce.number().int().min(0).default(30 * 24 * 3600),
  /** How old an open Operation row with no workflow must be before the reconciler closes it. */
  ESSH_OPERATION_SETTLE_S: seconds.default(30),
  /** Session creations allowed per API token (or SSH user) per minute; 0 turns the limit off. */
  ESSH_SESSION_CREATE_RATE: z.coerce.number().int().min(0).default(60),
  /** Recording downloads allowed per user per minute; 0 turns the limit off. */
  ESSH_RECORDING_DOWNLOAD_RATE: z.coerce.number().int().min(0).default(30),
  /** This installation's short id (container names, labels); by default made once per database. */
  ESSH_INSTALLATION: z.string().optional(),
  /** The idle init every session container runs as its main process, on the Docker host (built by scripts/setup.sh). */
  ESSH_INIT_PATH: z.string().optional(),
  /** The largest a session's output journal grows; past it output still reaches the client, unjournaled, and drains are told. */
  ESSH_JOURNAL_MAX_MB: z.coerce.number().int().positive().default(1024),
  /** New sessions are refused (503) while the stack host has less free disk than this. */
  ESSH_MIN_FREE_DISK_MB: z.coerce.number().int().min(0).default(1024),
  /**
   * Every process's own /metrics listener (API, main worker, host): loopback by default, so that neither
   * the internet nor the tenants' containers can reach it. Another address needs ESSH_METRICS_TOKEN.
   */
  ESSH_METRICS_HOST: z.string().default('127.0.0.1'),
  ESSH_METRICS_PORT: port.default(9470),
  /** The bearer token Prometheus sends (its `authorization: credentials_file`); also opens the API's /metrics. */
  ESSH_METRICS_TOKEN: z.string().min(16, 'ESSH_METRICS_TOKEN must be at least 16 characters').optional(),
  /**
   * The Temporal SDK's own Prometheus exporter (worker processes), on 127.0.0.1 only: it has no
   * authentication, so its figures are served through essh's /metrics. 0: any free port.
   */
  ESSH_TEMPORAL_METRICS_PORT: port.default(0),
  /**
   * The egress rules of session containers (host/egress.ts): on unless an operator turns them off, and
   * then the host says so loudly at every start.
   */
  ESSH_EGRESS_ENFORCE: z.enum(['0', '1', 'true', 'false']).default('1'),
  /** Ranges session containers may not connect to (comma-separated CIDRs; empty: none beyond those always refused). */
  ESSH_EGRESS_DENY: z.string().default(DEFAULT_EGRESS_DENY),
  /** Exceptions to ESSH_EGRESS_DENY (never to link-local, metadata or the host's own addresses). */
  ESSH_EGRESS_ALLOW: z.string().default(''),
  ESSH_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type EnvConfig = z.infer<typeof envSchema>;

/** The SSH portal's limits (portal/guard.ts holds them; the defaults are its DEFAULT_PORTAL_LIMITS). */
export interface PortalLimits {
  /** Open connections, authenticated or not. */
  maxConnections: number;
  /**
   * sshd's MaxStartups `start:rate:full` for connections still authenticating: past `earlyDropStart`
   * a newcomer from a source that already has one authenticating is dropped with a probability rising
   * from `earlyDropRate`% to 100% at `maxUnauthenticated`; at `maxUnauthenticated` a newcomer takes
   * the oldest slot of the source holding the most, if that source holds more than one beyond it.
   */
  earlyDropStart: number;
  earlyDropRate: number;
  maxUnauthenticated: number;
  /** Connections still authenticating from one source (an IPv4 address, an IPv6 /64). */
  maxUnauthenticatedPerAddress: number;
  /** Failed authentications (a key offered counts) from one source per minute before it is shut out for `blockS`. */
  failuresPerAddressPerMinute: number;
  blockS: number;
  /** Authentication attempts one connection may make (OpenSSH's MaxAuthTries); each key offered is one. */
  maxAuthAttempts: number;
  /** Time a connection has to authenticate. */
  authTimeoutS: number;
  /** An authenticated connection with no channel open this long is closed. */
  idleTimeoutS: number;
  /**
   * Idle authenticated connections (no channel open) one user may hold on this portal; past it the
   * user's longest-idle one is closed. Connections running a session do not count: the plan bounds those.
   */
  maxConnectionsPerUser: number;
}

export interface Config {
  dataDir: string;
  /** Base64 of the 32-byte key sealing stored secrets; absent: `<dataDir>/secrets.key`. */
  secretsKey?: string;
  /** Comma-separated base64 keys that sealed values may still be under (a rotation in progress). */
  previousSecretsKeys?: string;
  api: { host: string; port: number; trustProxy: string[] };
  ssh: {
    host: string; port: number; publicHost: string; heartbeatIntervalS: number; reattachWindowS: number; hostKey?: string;
    /** ESSH_PORTAL_INTERACTIVE_MS: portal/output-pacing.ts. */
    interactiveMs: number;
    limits: Partial<PortalLimits>;
  };
  /** The handover between an old and a new host process (lib/handover.ts). */
  upgrade: { drainS: number; bindWaitS: number };
  databaseUrl: string;
  temporal: {
    address?: string;
    namespace: string;
    tls?: { cert?: string; key?: string; ca?: string };
    apiKey?: string;
    uiPort: number;
    devPort: number;
    binary: string;
  };
  adminToken?: string;
  hostStacks: string[];
  hostId: string;
  /** ESSH_HOST_MAX_SESSIONS: placement puts no more live sessions than this on this host. */
  hostMaxSessions: number;
  session: {
    heartbeatTimeoutS: number;
    connectTimeoutS: number;
    stopGraceS: number;
    pidsLimit: number;
    tokenTtlS: number;
    createRatePerMinute: number;
  };
  reconcileIntervalS: number;
  /** A host silent for this long is lost (ESSH_HOST_STALE_S), and the sweep that ends its sessions runs this often. */
  hostLoss: { staleS: number; sweepIntervalS: number };
  drains: {
    backoffCapMs: number; batchEvents: number; batchBytes: number; retentionS: number;
    /** Drains may target loopback, private, link-local, CGNAT and metadata addresses (ESSH_DRAINS_ALLOW_PRIVATE). */
    allowPrivateTargets: boolean;
  };
  /** The host's internal endpoint (recordings/internal-server.ts). */
  hostInternal: { host: string; port: number; url?: string; tls?: { certFile: string; keyFile: string }; caFile?: string };
  /** Recording downloads per user per minute (ESSH_RECORDING_DOWNLOAD_RATE). */
  recordingDownloadsPerMinute: number;
  operationSettleS: number;
  /** ESSH_TOKEN_DEFAULT_TTL_S: the life of an API token issued without `expires_at`; 0: none. */
  tokenDefaultTtlS: number;
  installation?: string;
  initPath: string;
  journalMaxBytes: number;
  minFreeDiskBytes: number;
  /** The process's metrics listener (lib/metrics-server.ts) and the Temporal SDK's exporter. */
  metrics: { host: string; port: number; token?: string; temporalSdkPort: number };
  /** Where session containers may connect (host/egress.ts). */
  egress: EgressPolicy;
  logLevel: EnvConfig['ESSH_LOG_LEVEL'];
}

/** Reads the configuration from the environment; a bad value stops start-up with a sentence naming it. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`Invalid configuration (${problems}). Fix these environment variables and start again.`);
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.ESSH_DATA_DIR);
  const tlsGiven = e.TEMPORAL_TLS_CERT || e.TEMPORAL_TLS_KEY || e.TEMPORAL_TLS_CA;
  if ((e.TEMPORAL_TLS_CERT && !e.TEMPORAL_TLS_KEY) || (!e.TEMPORAL_TLS_CERT && e.TEMPORAL_TLS_KEY)) {
    throw new Error('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: set both (mTLS) or neither.');
  }
  if (Boolean(e.ESSH_HOST_INTERNAL_TLS_CERT) !== Boolean(e.ESSH_HOST_INTERNAL_TLS_KEY)) {
    throw new Error('ESSH_HOST_INTERNAL_TLS_CERT and ESSH_HOST_INTERNAL_TLS_KEY go together: set both (the internal endpoint speaks HTTPS) or neither.');
  }
  if (e.ESSH_HOST_STALE_S < 2 * e.ESSH_RECONCILE_INTERVAL_S) {
    throw new Error(
      `ESSH_HOST_STALE_S (${e.ESSH_HOST_STALE_S}) must be at least twice ESSH_RECONCILE_INTERVAL_S (${e.ESSH_RECONCILE_INTERVAL_S}), how often ` +
        'hosts report: a live host that missed one report would otherwise be taken for lost and its sessions ended.',
    );
  }
  if (!isLoopback(e.ESSH_METRICS_HOST) && !e.ESSH_METRICS_TOKEN) {
    throw new Error(
      `ESSH_METRICS_HOST is ${e.ESSH_METRICS_HOST}, which is not a loopback address: set ESSH_METRICS_TOKEN too (Prometheus sends it ` +
        'as its bearer), or the metrics would be open to whoever reaches that address, session containers included.',
    );
  }
  return {
    dataDir,
    secretsKey: e.ESSH_SECRETS_KEY,
    previousSecretsKeys: e.ESSH_SECRETS_KEY_PREVIOUS,
    api: { host: e.ESSH_API_HOST, port: e.ESSH_API_PORT, trustProxy: parseCidrList('ESSH_TRUST_PROXY', e.ESSH_TRUST_PROXY) },
    ssh: {
      host: e.ESSH_SSH_HOST, port: e.ESSH_SSH_PORT, publicHost: e.ESSH_PUBLIC_HOST ?? e.ESSH_SSH_HOST, heartbeatIntervalS: e.ESSH_PORTAL_HEARTBEAT_S, reattachWindowS: e.ESSH_REATTACH_WINDOW_S, hostKey: e.ESSH_PORTAL_HOST_KEY,
      interactiveMs: e.ESSH_PORTAL_INTERACTIVE_MS,
      limits: {
        ...(e.ESSH_PORTAL_MAX_CONNECTIONS ? { maxConnections: e.ESSH_PORTAL_MAX_CONNECTIONS } : {}),
        ...(e.ESSH_PORTAL_AUTH_TIMEOUT_S ? { authTimeoutS: e.ESSH_PORTAL_AUTH_TIMEOUT_S } : {}),
        ...(e.ESSH_PORTAL_MAX_STARTUPS ? startups(e.ESSH_PORTAL_MAX_STARTUPS) : {}),
        ...(e.ESSH_PORTAL_IDLE_TIMEOUT_S ? { idleTimeoutS: e.ESSH_PORTAL_IDLE_TIMEOUT_S } : {}),
        ...(e.ESSH_PORTAL_MAX_CONNECTIONS_PER_USER ? { maxConnectionsPerUser: e.ESSH_PORTAL_MAX_CONNECTIONS_PER_USER } : {}),
      },
    },
    upgrade: { drainS: e.ESSH_UPGRADE_DRAIN_S, bindWaitS: e.ESSH_UPGRADE_BIND_WAIT_S },
    databaseUrl: e.DATABASE_URL ?? path.join(dataDir, 'essh.sqlite'),
    temporal: {
      address: e.TEMPORAL_ADDRESS,
      namespace: e.TEMPORAL_NAMESPACE,
      tls: tlsGiven ? { cert: e.TEMPORAL_TLS_CERT, key: e.TEMPORAL_TLS_KEY, ca: e.TEMPORAL_TLS_CA } : undefined,
      apiKey: e.TEMPORAL_API_KEY,
      uiPort: e.TEMPORAL_UI_PORT,
      devPort: e.ESSH_TEMPORAL_DEV_PORT,
      binary: e.ESSH_TEMPORAL_BIN ?? toolPath('temporal'),
    },
    adminToken: e.ESSH_ADMIN_TOKEN,
    hostStacks: e.ESSH_HOST_STACKS.split(',').map((s) => s.trim()).filter(Boolean),
    hostId: e.ESSH_HOST_ID ?? os.hostname(),
    hostMaxSessions: e.ESSH_HOST_MAX_SESSIONS,
    session: {
      heartbeatTimeoutS: e.ESSH_HEARTBEAT_TIMEOUT_S,
      connectTimeoutS: e.ESSH_CONNECT_TIMEOUT_S,
      stopGraceS: e.ESSH_STOP_GRACE_S,
      pidsLimit: e.ESSH_PIDS_LIMIT,
      tokenTtlS: e.ESSH_SESSION_TOKEN_TTL_S,
      createRatePerMinute: e.ESSH_SESSION_CREATE_RATE,
    },
    reconcileIntervalS: e.ESSH_RECONCILE_INTERVAL_S,
    hostLoss: { staleS: e.ESSH_HOST_STALE_S, sweepIntervalS: e.ESSH_HOST_LOSS_SWEEP_S },
    drains: {
      backoffCapMs: e.ESSH_DRAIN_BACKOFF_CAP_S * 1000, batchEvents: e.ESSH_DRAIN_BATCH_EVENTS, batchBytes: e.ESSH_DRAIN_BATCH_BYTES,
      retentionS: e.ESSH_EVENT_RETENTION_S, allowPrivateTargets: e.ESSH_DRAINS_ALLOW_PRIVATE === '1' || e.ESSH_DRAINS_ALLOW_PRIVATE === 'true',
    },
    hostInternal: {
      host: e.ESSH_HOST_INTERNAL_HOST, port: e.ESSH_HOST_INTERNAL_PORT, url: e.ESSH_HOST_INTERNAL_URL,
      tls: e.ESSH_HOST_INTERNAL_TLS_CERT && e.ESSH_HOST_INTERNAL_TLS_KEY ? { certFile: e.ESSH_HOST_INTERNAL_TLS_CERT, keyFile: e.ESSH_HOST_INTERNAL_TLS_KEY } : undefined,
      caFile: e.ESSH_HOST_INTERNAL_TLS_CA,
    },
    recordingDownloadsPerMinute: e.ESSH_RECORDING_DOWNLOAD_RATE,
    operationSettleS: e.ESSH_OPERATION_SETTLE_S,
    tokenDefaultTtlS: e.ESSH_TOKEN_DEFAULT_TTL_S,
    installation: e.ESSH_INSTALLATION,
    initPath: path.resolve(e.ESSH_INIT_PATH ?? path.join(projectRoot, '.tools', 'essh-init')),
    journalMaxBytes: e.ESSH_JOURNAL_MAX_MB * 1024 * 1024,
    minFreeDiskBytes: e.ESSH_MIN_FREE_DISK_MB * 1024 * 1024,
    metrics: { host: e.ESSH_METRICS_HOST, port: e.ESSH_METRICS_PORT, token: e.ESSH_METRICS_TOKEN, temporalSdkPort: e.ESSH_TEMPORAL_METRICS_PORT },
    egress: {
      enforce: e.ESSH_EGRESS_ENFORCE === '1' || e.ESSH_EGRESS_ENFORCE === 'true',
      deny: parseCidrList('ESSH_EGRESS_DENY', e.ESSH_EGRESS_DENY),
      allow: parseCidrList('ESSH_EGRESS_ALLOW', e.ESSH_EGRESS_ALLOW),
    },
    logLevel: e.ESSH_LOG_LEVEL,
  };
}

/** Whether `host` is a loopback address: what only this machine's own programs can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** The project-local venv's binary (installed by scripts/setup.sh), else the one on PATH. */
export function toolPath(name: 'temporal' | 'temporal-test-server'): string {
  const local = path.join(projectRoot, '.tools', 'venv', 'bin', name);
  return existsSync(local) ? local : name;
}
