import path from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@temporalio/client';
import type { NativeConnection, Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createApi } from '../api/app.js';
import { drainable, type Drainable } from '../api/graceful-close.js';
import type { Config } from '../lib/config.js';
import { engineOf, openDatabase, type Db, type DbEngine } from '../lib/db.js';
import { migrate } from '../lib/migrations/index.js';
import { openDocker } from '../lib/docker.js';
import { loadInstallation, type Installation } from '../lib/instance.js';
import { createLogger, type Logger } from '../lib/log.js';
import { createMetrics, registerDbMetrics, type Metrics } from '../lib/metrics.js';
import { MetricsServer, type Exposition } from '../lib/metrics-server.js';
import { sealStoredEnvs } from '../domain/app-env.js';
import { loadSecretBox, type SecretBox } from '../lib/secrets.js';
import { connectClient, connectWorker, ensureSearchAttributes, temporalAddress, installTemporalRuntime, temporalSdkMetrics } from '../lib/temporal.js';
import { AdminService } from '../services/admin.js';
import { SessionsService } from '../services/sessions.js';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { HostAgent } from '../host/agent.js';
import { closeLeftJournals } from '../host/left-journals.js';
import { EgressGuard } from '../host/egress.js';
import { relayBesideInit, sftpBesideInit } from '../host/containers.js';
import { registerHostMetrics } from '../host/metrics.js';
import { HostRegistration } from '../host/registry.js';
import { WarmPool } from '../host/warm-pool.js';
import { OperationsReconciler } from '../worker/operations-reconciler.js';
import { HostLossSweep } from '../worker/host-loss-sweep.js';
import { announcedHostKey, loadOrCreateHostKey } from '../lib/ssh-host-key.js';
import { hostRoutes } from '../api/routes/hosts.js';
import { HostsService } from '../services/hosts.js';
import { SshPortal } from '../portal/server.js';
import { createHostWorkers, createMainWorker } from '../worker/workers.js';
import { registerDrainMetrics } from '../drains/metrics.js';
import { JournalRetention } from '../drains/retention.js';
import { DrainsService, sealStoredDrainSecrets } from '../drains/service.js';
import { DrainShipper } from '../drains/shipper.js';
import { drainRoutes } from '../api/routes/drains.js';
import { recordingRoutes } from '../api/routes/recordings.js';
import { auditRoutes } from '../api/routes/audit.js';
import { liveRoutes } from '../api/routes/live.js';
import { AuditService } from '../services/audit.js';
import { AuditShipper } from '../drains/audit-shipper.js';
import { consolePages } from '../console/server.js';
import { RecordingsService } from '../recordings/service.js';
import { HostInternalServer } from '../recordings/internal-server.js';
import { hostProcesses, untilPredecessorsDrain } from '../lib/handover.js';
import { VERSION } from '../lib/version.js';

export interface RuntimeParts {
  /** Serve the REST API. */
  api?: boolean;
  /** Run the main worker (workflows, record-keeping activities, the operations reconciler). */
  worker?: boolean;
  /** Stacks whose host worker (container activities and host agent) runs here; none if empty. */
  hostStacks?: string[];
  workflowBundle?: WorkflowBundleWithSourceMap;
  /** Serve the SSH portal (on config.ssh.host:port). */
  portal?: boolean;
  /**
   * Check that the namespace has essh's search attributes, and register those it lacks (or stop,
   * naming the commands that would): what `npm start` and server/worker-main.ts do; the tests' namespaces
   * are made with them.
   */
  searchAttributes?: boolean;
}

export interface Runtime {
  config: Config;
  db: Db;
  engine: DbEngine;
  /** This installation's short id (container names and labels). */
  instanceId: string;
  installation: Installation;
  client: Client;
  sessions: SessionsService;
  admin: AdminService;
  /** Seals and opens stored secrets (drain credentials, app environments). */
  secrets: SecretBox;
  log: Logger;
  apiUrl?: string;
  server?: Server;
  hostAgent?: HostAgent;
  /** The warm pool of this process's host (its stacks' apps). */
  pool?: WarmPool;
  portal?: SshPortal;
  /** The port the SSH portal listens on (config.ssh.port, or the one picked for port 0). */
  sshPort?: number;
  /** This process's /metrics (lib/metrics-server.ts). */
  metricsUrl: string;
  stop(): Promise<void>;
  /**
   * An upgrade's SIGTERM (lib/handover.ts): closes the listeners and stops taking work (workers,
   * host agent, warm pool, drain shipper, retention…: the successor runs those), keeps serving and
   * heartbeating the connections it has until the last ends (then stops: true) or
   * ESSH_UPGRADE_DRAIN_S passes (false: the caller exits at once, leaving the attached notes for the
   * successor's reattach window, as a crash would).
   */
  handOver(): Promise<boolean>;
}

/**
 * How long an API replica sent SIGTERM waits for its open connections to end: longer than the proxy's
 * idle keep-alive (4 s) and the API's longest answers, a recording download aside.
 */
const API_DRAIN_MS = 30_000;

/**
 * What this process started, each with what stops it: stopped in the reverse order of their start.
 * The parts that serve clients already attached are marked, so that an upgrade's drain keeps them.
 */
class StartedParts {
  private readonly cleanups: (() => Promise<unknown>)[] = [];
  private readonly servingClients = new Set<() => Promise<unknown>>();

  constructor(private readonly log: Logger) {}

  stops(cleanup: () => Promise<unknown>): void {
    this.cleanups.push(cleanup);
  }

  /** A part an upgrade's drain keeps running: what serves the clients already attached (handOver). */
  serves(cleanup: () => Promise<unknown>): void {
    this.servingClients.add(cleanup);
    this.cleanups.push(cleanup);
  }

  async stopAll(): Promise<void> {
    await this.run(this.cleanups.splice(0));
  }

  /** Stops every part but those serving clients, which stay for stopAll(). */
  async stopAllButServing(): Promise<void> {
    const stopping = this.cleanups.filter((c) => !this.servingClients.has(c));
    const kept = this.cleanups.filter((c) => this.servingClients.has(c));
    this.cleanups.splice(0, this.cleanups.length, ...kept);
    await this.run(stopping);
  }

  private async run(cleanups: (() => Promise<unknown>)[]): Promise<void> {
    for (const c of cleanups.reverse()) await c().catch((err) => this.log.warn({ err }, 'stopping a part failed'));
  }
}

/** What every part is started with. */
interface Context {
  config: Config;
  parts: RuntimeParts;
  log: Logger;
  started: StartedParts;
  runtime: Runtime;
  metrics: Metrics;
}

/** Starts the parts of essh this process runs, each with an owner that stops it on `stop()`. */
export async function startRuntime(config: Config, parts: RuntimeParts, log = createLogger(config.logLevel)): Promise<Runtime> {
  const started = new StartedParts(log);
  const stop = () => started.stopAll();
  try {
    const { db, engine, installation, secrets } = await openStore(config, started, log);
    const client = await connectTemporal(config, parts, started, log);
    const metrics = createMetrics();
    const exposition: Exposition = {
      contentType: metrics.registry.contentType,
      text: async () => (await metrics.registry.metrics()) + (await temporalSdkMetrics()),
    };
    // The portal may pick its port (port 0): the `connect` blocks follow it once it listens.
    const sshEndpoint = {
      publicHost: config.ssh.publicHost,
      port: config.ssh.port,
      // Announced so that clients can tell the portal from anything else answering at that address.
      hostKey: parts.api ? await portalHostKey(config) : undefined,
    };
    const connection = parts.worker || parts.hostStacks?.length ? await connectWorkers(config, started, log) : undefined;
    const eagerClient = parts.worker && connection ? new Client({ connection, namespace: config.temporal.namespace }) : undefined;
    const sessions = new SessionsService({
      db, engine, client, eagerClient, instanceId: installation.id, secrets,
      timeouts: { ...config.session },
      ssh: sshEndpoint,
      createRatePerMinute: config.session.createRatePerMinute,
      minFreeDiskBytes: config.minFreeDiskBytes,
      hostStaleS: config.hostLoss.staleS,
      metrics,
    });
    const admin = new AdminService(db, secrets, { tokenDefaultTtlS: config.tokenDefaultTtlS });
    let apiDrain: Drainable | undefined;
    const handOver = async () => {
      const portal = runtime.portal;
      if (parts.hostStacks?.length) hostProcesses(config.dataDir).announce({ draining: true });
      // The port first, so that the successor answers new clients at once (it retries the bind).
      portal?.stopAccepting();
      // An API replica lets its requests finish while the proxy turns to the others (api/graceful-close.ts).
      if (apiDrain) {
        const cut = await apiDrain.closeGracefully(API_DRAIN_MS);
        if (cut) log.warn({ connections: cut, drain_ms: API_DRAIN_MS }, 'API connections still open at the drain deadline were closed');
      }
      await started.stopAllButServing();
      const drained = portal ? await portal.drained(config.upgrade.drainS * 1000) : true;
      if (drained) await stop();
      return drained;
    };
    const runtime: Runtime = {
      config, db, engine, instanceId: installation.id, installation, client, sessions, admin, secrets, log, stop, handOver, metricsUrl: '',
    };
    const ctx: Context = { config, parts, log, started, runtime, metrics };

    // An upgrade's successor takes the host's work only once its predecessor has stopped taking it.
    const takingWork = new AbortController();
    const mayTakeWork = parts.hostStacks?.length ? untilPredecessorsDrain(config.dataDir, takingWork.signal, log) : Promise.resolve(true);
    const whenMayTakeWork = (start: () => unknown) => void mayTakeWork.then((ok) => {
      if (ok && !takingWork.signal.aborted) start();
    });
    const mainWorkers = parts.worker && connection ? [await startMainWorker(ctx, connection)] : [];
    const host = parts.hostStacks?.length && connection ? await startHost(ctx, parts.hostStacks, connection, whenMayTakeWork) : undefined;
    runWorkers(ctx, mainWorkers, host?.workers ?? [], mayTakeWork, takingWork.signal);
    // Stopped first (cleanups run in reverse): parts still waiting to take work never start.
    started.stops(async () => takingWork.abort());

    if (parts.api) apiDrain = await startApi(ctx, exposition);
    if (parts.portal) await startPortal(ctx, sshEndpoint, host?.registration);
    if (parts.worker) startHostLossSweep(ctx);
    await startMetricsServer(ctx, exposition);
    return runtime;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The data dir, the database (migrated), the installation's id and the secrets, stored secrets resealed. */
async function openStore(config: Config, started: StartedParts, log: Logger) {
  // The data dir holds the database, keys, tokens and the sessions' journals: essh's user only. Files
  // this process (and its children, the Temporal dev server among them) makes are 0600, dirs 0700.
  process.umask(0o077);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  chmodSync(config.dataDir, 0o700);
  const engine = engineOf(config.databaseUrl);
  const db = openDatabase(config.databaseUrl);
  started.serves(() => db.destroy());
  await migrate(db, engine);
  const installation = await loadInstallation(db, config.installation);
  const secrets = await loadSecretBox({ dataDir: config.dataDir, keyBase64: config.secretsKey, previousKeysBase64: config.previousSecretsKeys });
  const resealed = await sealStoredDrainSecrets(db, secrets);
  if (resealed) log.info({ drains: resealed, key: secrets.keyId }, 'sealed stored drain credentials under the current secrets key');
  const envs = await sealStoredEnvs(db, secrets);
  if (envs.apps || envs.sessions) log.info({ ...envs, key: secrets.keyId }, 'sealed stored app and session environments under the current secrets key');
  return { db, engine, installation, secrets };
}

/** The Temporal client, with essh's search attributes registered where asked. */
async function connectTemporal(config: Config, parts: RuntimeParts, started: StartedParts, log: Logger): Promise<Client> {
  const client = await connectClient(config.temporal);
  started.serves(() => client.connection.close());
  if (parts.searchAttributes && (parts.api || parts.worker)) {
    const { added } = await ensureSearchAttributes(client.connection, { namespace: config.temporal.namespace, address: temporalAddress(config.temporal) });
    if (added.length) log.info({ namespace: config.temporal.namespace, added }, 'registered essh\'s search attributes');
  }
  return client;
}

/** The workers' own connection, in the Temporal runtime that exports the SDK's metrics. */
async function connectWorkers(config: Config, started: StartedParts, log: Logger): Promise<NativeConnection> {
  await installTemporalRuntime(log, { metricsPort: config.metrics.temporalSdkPort });
  const connection = await connectWorker(config.temporal);
  started.stops(() => connection.close());
  return connection;
}

/** The main worker (the workflow and its record-keeping activities) and the operations reconciler. */
async function startMainWorker({ config, parts, log, started, runtime: { db, client } }: Context, connection: NativeConnection): Promise<Worker> {
  const worker = await createMainWorker({ connection, namespace: config.temporal.namespace, db, workflowBundle: parts.workflowBundle });
  const reconciler = new OperationsReconciler({ db, client, intervalS: config.reconcileIntervalS, settleS: config.operationSettleS, log });
  reconciler.start();
  started.stops(() => reconciler.stop());
  return worker;
}

/**
 * A stack host: its containers' parts (egress rules, warm pool, host workers, agent, metrics), its
 * registration, and its part of drains and recordings. What takes work waits for `whenMayTakeWork`.
 */
async function startHost(ctx: Context, stacks: string[], connection: NativeConnection, whenMayTakeWork: (start: () => unknown) => void) {
  const { config, log, started, runtime, metrics } = ctx;
  const { db, client, installation, secrets } = runtime;
  const sftpServer = path.join(sftpBesideInit(config.initPath), 'sftp-server');
  for (const [what, file] of [['idle init', config.initPath], ['port-forwarding relay', relayBesideInit(config.initPath)], ['SFTP server', sftpServer]] as const) {
    if (!existsSync(file)) {
      throw new Error(`the ${what} for session containers is missing at ${file}; run scripts/setup.sh (it builds the init and relay with gcc ` +
        'and copies OpenSSH\'s sftp-server) or set ESSH_INIT_PATH (to a folder holding essh-init, essh-relay and essh-sftp/)');
    }
  }
  const docker = openDocker();
  // Before anything can put a container on the session network: a host that cannot set its rules stops here.
  const egress = new EgressGuard({ docker, db, installation: installation.id, policy: config.egress, intervalS: config.reconcileIntervalS, log });
  await egress.start();
  started.stops(() => egress.stop());
  const pool = new WarmPool({
    docker, db, installation: installation.id, hostId: config.hostId, stacks, initPath: config.initPath,
    pidsLimit: config.session.pidsLimit, intervalS: config.reconcileIntervalS, log, secrets, egress,
  });
  const workers: Worker[] = [];
  for (const stack of stacks) {
    workers.push(...await createHostWorkers({
      connection, namespace: config.temporal.namespace, stack,
      host: { docker, db, hostId: config.hostId, installation, dataDir: config.dataDir, initPath: config.initPath, pool, secrets, egress, journalMaxBytes: config.journalMaxBytes },
    }));
  }
  whenMayTakeWork(() => pool.start());
  started.stops(() => pool.stop());
  runtime.pool = pool;
  // One agent per engine, whatever the number of stacks it serves.
  const agent = new HostAgent({
    docker, client, installation, hostId: config.hostId, stopGraceS: config.session.stopGraceS, intervalS: config.reconcileIntervalS, log,
    closeLeftJournals: () => closeLeftJournals({ db, dataDir: config.dataDir, hostId: config.hostId, log }),
  });
  whenMayTakeWork(() => agent.start().catch((err) => log.warn({ err }, 'starting the host agent failed')));
  runtime.hostAgent = agent;
  started.stops(() => agent.stop());
  registerHostMetrics(metrics.registry, {
    docker, installation, hostId: config.hostId, stacks, dataDir: config.dataDir,
    minFreeDiskBytes: config.minFreeDiskBytes, maxSessions: config.hostMaxSessions, db, pool, agent, portal: () => runtime.portal,
  });
  const registration = new HostRegistration({ db, log, intervalS: config.reconcileIntervalS }, {
    hostId: config.hostId, stacks, dataDir: config.dataDir, maxSessions: config.hostMaxSessions,
    pool: () => pool.totals(),
  });
  await registration.start();
  started.stops(() => registration.stop());
  await startHostJournals(ctx, registration, whenMayTakeWork);
  return { workers, registration };
}

/** This host's part of drains and recordings: it ships, keeps and serves the journals of the sessions that ran here. */
async function startHostJournals({ config, log, started, runtime: { db, secrets } }: Context, registration: HostRegistration, whenMayTakeWork: (start: () => unknown) => void) {
  const shipper = new DrainShipper({
    db, log, secrets, hostId: config.hostId, dataDir: config.dataDir,
    settings: {
      batchEvents: config.drains.batchEvents, batchBytes: config.drains.batchBytes, backoffCapMs: config.drains.backoffCapMs,
      allowPrivateTargets: config.drains.allowPrivateTargets,
    },
  });
  whenMayTakeWork(() => shipper.start());
  started.stops(() => shipper.stop());
  const retention = new JournalRetention({
    db, log, hostId: config.hostId, dataDir: config.dataDir, retentionS: config.drains.retentionS, intervalS: config.reconcileIntervalS,
  });
  whenMayTakeWork(() => retention.start());
  started.stops(() => retention.stop());
  const internal = new HostInternalServer({
    db, log, secrets, hostId: config.hostId, dataDir: config.dataDir, retentionS: config.drains.retentionS,
    listen: config.hostInternal, publicUrl: config.hostInternal.url,
    tls: config.hostInternal.tls && {
      cert: readFileSync(config.hostInternal.tls.certFile, 'utf8'), key: readFileSync(config.hostInternal.tls.keyFile, 'utf8'),
    },
  });
  const internalUrl = await internal.start();
  started.stops(() => internal.stop());
  await registration.update({ internalUrl });
}

/** Runs the workers: the main ones at once, a host's once it may take work (an upgrade's predecessor has drained). */
function runWorkers({ started }: Context, mainWorkers: Worker[], hostWorkers: Worker[], mayTakeWork: Promise<boolean>, takingWork: AbortSignal): void {
  const hostSet = new Set(hostWorkers);
  // In the order they were made: the main worker, then each stack's host workers.
  for (const w of [...mainWorkers, ...hostWorkers]) {
    const running = hostSet.has(w)
      ? mayTakeWork.then((ok) => (ok && !takingWork.aborted ? w.run() : undefined))
      : w.run();
    started.stops(async () => {
      if (w.getState() === 'RUNNING') w.shutdown();
      await running;
    });
  }
}

/** The REST API (with the drains', recordings', audit and hosts' routes, and the console) and the audit shipper; returns its drain. */
async function startApi({ config, parts, log, started, runtime, metrics }: Context, exposition: Exposition): Promise<Drainable> {
  const { db, sessions, admin, secrets } = runtime;
  registerDbMetrics(metrics.registry, db);
  registerDrainMetrics(metrics.registry, db);
  const recordings = new RecordingsService({
    db, secrets, retentionS: config.drains.retentionS,
    localHost: parts.hostStacks?.length ? { hostId: config.hostId, dataDir: config.dataDir } : undefined,
    internalCa: config.hostInternal.caFile ? readFileSync(config.hostInternal.caFile, 'utf8') : undefined,
    downloadsPerMinute: config.recordingDownloadsPerMinute,
  });
  const { app } = createApi({
    db, sessions, admin, metrics, exposition, metricsToken: config.metrics.token, trustProxy: config.api.trustProxy, log, version: VERSION,
    extraRoutes: [
      drainRoutes(new DrainsService(db, secrets, { allowPrivateTargets: config.drains.allowPrivateTargets })),
      recordingRoutes(recordings),
      auditRoutes(new AuditService(db)),
      hostRoutes(new HostsService(db, { staleS: config.hostLoss.staleS })),
      // The console's live view: from this process's portal, when it runs one (it starts after the API).
      liveRoutes({
        db, sessions, dataDir: config.dataDir, log, hostId: parts.hostStacks?.length ? config.hostId : undefined,
        audiences: () => runtime.portal?.audiences,
      }),
    ],
    pages: consolePages(log),
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.api.port, config.api.host, () => resolve(s)).once('error', reject);
  });
  const apiDrain = drainable(server);
  started.stops(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  // The audit trail goes to the drains from the API's processes, where it is written.
  const auditShipper = new AuditShipper({
    db, log, secrets,
    settings: { backoffCapMs: config.drains.backoffCapMs, allowPrivateTargets: config.drains.allowPrivateTargets },
  });
  auditShipper.start();
  started.stops(() => auditShipper.stop());
  const { port } = server.address() as AddressInfo;
  runtime.server = server;
  runtime.apiUrl = `http://${config.api.host}:${port}`;
  return apiDrain;
}

/** The SSH portal; the API's connect blocks (sshEndpoint, and the host's registration) name its port. */
async function startPortal({ config, parts, log, started, runtime }: Context, sshEndpoint: { port: number }, registration?: HostRegistration) {
  const { db, sessions, client } = runtime;
  const portal = new SshPortal({
    config, db, sessions, client, docker: openDocker(), log,
    // Only a portal on a stack host: it is the one that host's restarted process takes over from.
    hostId: parts.hostStacks?.length ? config.hostId : undefined,
  });
  await portal.start();
  started.serves(() => portal.stop());
  runtime.portal = portal;
  runtime.sshPort = portal.port;
  sshEndpoint.port = portal.port;
  // The API's connect blocks for this host's stacks name this portal, wherever the API runs.
  await registration?.update({
    ssh: { host: config.ssh.publicHost, port: portal.port, hostKey: announcedHostKey(await loadOrCreateHostKey(config.dataDir)).line },
  });
}

/**
 * The sweep that ends the sessions of lost hosts. Started once this process's own host (if it runs one)
 * has reported: a host restarted after a stop longer than the stale time must not take itself for lost.
 */
function startHostLossSweep({ config, log, started, runtime: { db, client } }: Context): void {
  const sweep = new HostLossSweep({ db, client, staleS: config.hostLoss.staleS, intervalS: config.hostLoss.sweepIntervalS, log });
  sweep.start();
  started.stops(() => sweep.stop());
}

/** This process's /metrics listener (on a host, it may wait for its predecessor's port). */
async function startMetricsServer({ config, parts, log, started, runtime }: Context, exposition: Exposition): Promise<void> {
  const metricsServer = new MetricsServer({
    host: config.metrics.host, port: config.metrics.port, token: config.metrics.token, exposition, log,
    handover: parts.hostStacks?.length ? { dataDir: config.dataDir, bindWaitS: config.upgrade.bindWaitS } : undefined,
  });
  runtime.metricsUrl = await metricsServer.start();
  started.stops(() => metricsServer.stop());
}

/** The host key the API announces: ESSH_PORTAL_HOST_KEY, else the portal's own key under the data dir. */
async function portalHostKey(config: Config) {
  if (!config.ssh.hostKey) return announcedHostKey(await loadOrCreateHostKey(config.dataDir));
  try {
    return announcedHostKey(config.ssh.hostKey);
  } catch (err) {
    throw new Error(`ESSH_PORTAL_HOST_KEY is ${(err as Error).message}`);
  }
}
