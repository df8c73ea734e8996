import { statfs } from 'node:fs/promises';
import type Docker from 'dockerode';
import { Counter, Gauge, type Registry } from 'prom-client';
import { LABELS } from '../lib/docker.js';
import type { Db } from '../lib/db.js';
import type { Installation } from '../lib/instance.js';
import type { HostAgent } from './agent.js';
import { liveSessionsOn } from './registry.js';
import { roleOf } from './containers.js';
import type { WarmPool } from './warm-pool.js';

export interface HostMetricsDeps {
  docker: Docker;
  installation: Installation;
  hostId: string;
  stacks: string[];
  dataDir: string;
  minFreeDiskBytes: number;
  /** ESSH_HOST_MAX_SESSIONS, and where the sessions placed here are counted (host/registry.ts, liveSessionsOn). */
  maxSessions: number;
  db: Db;
  pool: WarmPool;
  agent: HostAgent;
  /** Set once the portal listens (a host process runs one for its stacks). */
  portal?: () => { figures(): PortalFigures } | undefined;
}

/** What the host's metrics read from its portal at each scrape (portal/server.ts answers it). */
export interface PortalFigures<Refusal extends string = string> {
  /** Connections open, admitted, authenticated or not. */
  connections: number;
  unauthenticated: number;
  /** Channels attached to a session. */
  attachments: number;
  /** Connections turned away, by the limit that refused them. */
  refused: Record<Refusal, number>;
  reattachWaiting: number;
}

/**
 * A stack host's own figures, read at each scrape from the engine, the file system and the parts of
 * this process: what the alert rules of deploy/prometheus/essh-rules.yml watch on a host. Apps are
 * labelled by id (their handles name customers).
 */
export function registerHostMetrics(registry: Registry, deps: HostMetricsDeps) {
  const registers = [registry];
  new Gauge({
    name: 'essh_host_info', help: 'Always 1: the host id and each stack this host process serves', labelNames: ['host_id', 'stack'], registers,
    collect() {
      for (const stack of deps.stacks) this.set({ host_id: deps.hostId, stack }, 1);
    },
  });
  new Gauge({
    name: 'essh_host_sessions', help: 'Session containers on this host\'s engine (this installation\'s, this host\'s stacks), by stack and engine state',
    labelNames: ['stack', 'state'], registers,
    async collect() {
      this.reset();
      const all = await deps.docker.listContainers({ all: true, filters: { label: [`${LABELS.instance}=${deps.installation.id}`] } });
      for (const stack of deps.stacks) this.set({ stack, state: 'running' }, 0);
      for (const c of all) {
        const stack = c.Labels[LABELS.stack] ?? '';
        if (!deps.stacks.includes(stack)) continue;
        if (!c.Names.some((n) => roleOf(n, deps.installation).kind === 'session')) continue;
        this.inc({ stack, state: c.State === 'running' ? 'running' : 'other' });
      }
    },
  });
  // One engine listing per scrape serves both pool series.
  let reading: ReturnType<WarmPool['figures']> | null = null;
  const poolFigures = () => {
    reading ??= deps.pool.figures().finally(() => setTimeout(() => (reading = null), 0));
    return reading;
  };
  new Gauge({
    name: 'essh_warm_pool_target', help: 'Warm pool containers each app asks for (its warm_pool), by app id and stack', labelNames: ['app_id', 'stack'], registers,
    async collect() {
      this.reset();
      for (const f of await poolFigures()) this.set({ app_id: f.appId, stack: f.stack }, f.target);
    },
  });
  new Gauge({
    name: 'essh_warm_pool_ready', help: 'Warm pool containers running and not yet taken, by app id and stack', labelNames: ['app_id', 'stack'], registers,
    async collect() {
      this.reset();
      for (const f of await poolFigures()) this.set({ app_id: f.appId, stack: f.stack }, f.ready);
    },
  });
  new Gauge({
    name: 'essh_portal_connections', help: 'SSH connections open on this host\'s portal, by whether they have authenticated yet',
    labelNames: ['phase'], registers,
    collect() {
      const f = deps.portal?.()?.figures();
      this.set({ phase: 'authenticated' }, f ? f.connections - f.unauthenticated : 0);
      this.set({ phase: 'authenticating' }, f?.unauthenticated ?? 0);
    },
  });
  new Counter({
    name: 'essh_portal_refused_connections_total',
    help: 'Connections the portal turned away before their key exchange, by the limit that refused them, and authenticating ones it closed to make room for a newcomer (limit="evicted"; docs/threat-model.md)',
    labelNames: ['limit'], registers,
    collect() {
      const refused = deps.portal?.()?.figures().refused;
      this.reset();
      for (const [limit, n] of Object.entries(refused ?? {})) this.inc({ limit }, n);
    },
  });
  new Gauge({
    name: 'essh_portal_reattach_waiting',
    help: 'Sessions the reattach window keeps for clients of a crashed predecessor portal that are not back yet', registers,
    collect() {
      this.set(deps.portal?.()?.figures().reattachWaiting ?? 0);
    },
  });
  new Gauge({
    name: 'essh_portal_attachments', help: 'Portal channels attached to a session (its program running by docker exec)', registers,
    collect() {
      this.set(deps.portal?.()?.figures().attachments ?? 0);
    },
  });
  new Gauge({
    name: 'essh_host_free_disk_bytes', help: 'Free space (for essh\'s user) on the file system of the data dir, where the session journals are', registers,
    async collect() {
      const fs = await statfs(deps.dataDir);
      this.set(fs.bavail * fs.bsize);
    },
  });
  new Gauge({
    name: 'essh_host_placed_sessions', help: 'Live sessions placed on this host (not yet ending): placement gives it none past essh_host_max_sessions', registers,
    async collect() {
      this.set((await liveSessionsOn(deps.db, [deps.hostId])).get(deps.hostId) ?? 0);
    },
  });
  new Gauge({
    name: 'essh_host_max_sessions', help: 'The most live sessions placement puts on this host (ESSH_HOST_MAX_SESSIONS)', registers,
    collect() {
      this.set(deps.maxSessions);
    },
  });
  new Gauge({
    name: 'essh_host_cordoned', help: '1 while an operator has cordoned this host (POST /hosts/{id}/cordon): it takes no new session', registers,
    async collect() {
      const row = await deps.db.selectFrom('hosts').select('cordoned').where('host_id', '=', deps.hostId).executeTakeFirst();
      this.set(Number(row?.cordoned ?? 0));
    },
  });
  new Gauge({
    name: 'essh_host_min_free_disk_bytes', help: 'Below this much free disk the host takes no new session (ESSH_MIN_FREE_DISK_MB)', registers,
    collect() {
      this.set(deps.minFreeDiskBytes);
    },
  });
  new Gauge({
    name: 'essh_host_agent_last_pass_timestamp_seconds',
    help: 'When the host agent\'s last reconcile pass over the engine\'s containers succeeded (every ESSH_RECONCILE_INTERVAL_S)', registers,
    collect() {
      const at = deps.agent.lastPassAt;
      if (at !== undefined) this.set(at / 1000);
    },
  });
}
