import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import { LABELS } from '../lib/docker.js';
import { grantProblem } from '../domain/grants.js';
import { PeriodicPass } from '../lib/periodic.js';
import type { SecretBox } from '../lib/secrets.js';
import { planCpus } from '../domain/plans.js';
import {
  appContainerSettings, createAndStart, poolContainerName, removeContainer, resize, settingsHash,
  type Resources,
} from './containers.js';
import type { EgressGuard } from './egress.js';

/** Longer than any list of candidates lives (a take's, or a keeper pass's). */
const TAKEN_STAYS_CLAIMED_MS = 120_000;

/** A pool container is made at the default session size, then sized for the session that takes it. */
const POOL_CONTAINER_MB = 1024;

const resourcesLabel = (r: Omit<Resources, 'pidsLimit'>) => `${r.memoryMb}m,${r.cpus ?? 0}`;

export interface WarmPoolDeps {
  docker: Docker;
  db: Db;
  installation: string;
  hostId: string;
  /** The stacks this host serves: it keeps the pools of their apps. */
  stacks: string[];
  initPath: string;
  pidsLimit: number;
  intervalS: number;
  log: Logger;
  secrets: SecretBox;
  /** The session network, its egress rules set. */
  egress: EgressGuard;
}

/**
 * Keeps, on this host, `warm_pool` containers started for each app of its stacks (CONTRACT §7), so that
 * a session gets a running container at once. A pool container is made with the app's settings of the
 * moment and labelled with their hash: when the settings change, or the app goes, its containers are
 * replaced or removed. A session takes one by renaming it to the session's name; a container serves
 * one session and is never given back.
 *
 * Taking and the keeper's removals happen in this process only (one host process per engine and
 * stack), under `claimed`, so two sessions never get the same container and the keeper never removes
 * one being taken.
 */
export class WarmPool {
  private readonly claimed = new Set<string>();
  private readonly passes: PeriodicPass<void>;
  /** The pool size each app of this host's stacks asks for, as of the last pass: app id → stack and size. */
  private targets = new Map<string, { stack: string; count: number }>();

  constructor(private readonly deps: WarmPoolDeps) {
    this.passes = new PeriodicPass(() => this.keep(), { intervalS: deps.intervalS, log: deps.log, what: 'warm pool pass' });
  }

  start(): void {
    void this.passes.runOnce();
    this.passes.start();
  }

  stop(): Promise<void> {
    return this.passes.stop();
  }

  /** One pass now (tests, and right after a take, to refill). */
  refill(): Promise<void> {
    return this.passes.runOnce().then(() => undefined);
  }

  /**
   * Takes a running pool container made with `settingsHash` for the app, renames it `name` and sizes
   * it; null when none fits (the caller creates one at once).
   */
  async take(appId: number, hash: string, name: string, resources: Omit<Resources, 'pidsLimit'>): Promise<string | null> {
    const { docker, installation, log } = this.deps;
    const candidates = await docker.listContainers({
      filters: { label: [`${LABELS.instance}=${installation}`, `${LABELS.pool}=true`, `${LABELS.appId}=${appId}`, `${LABELS.settings}=${hash}`], status: ['running'] },
    });
    for (const c of candidates) {
      if (this.claimed.has(c.Id) || !c.Names.some((n) => n.includes('-pool-')) || !this.isOwn(c.Labels)) continue;
      this.claimed.add(c.Id);
      try {
        await docker.getContainer(c.Id).rename({ name });
      } catch (err) {
        this.claimed.delete(c.Id);
        log.debug({ err }, 'a pool container could not be taken; trying the next');
        continue;
      }
      try {
        // The engine's update is the slowest call of a take (22 ms p50 on an idle engine): skipped when
        // the container already has the session's size, as a default-size session's pool container has.
        if (c.Labels[LABELS.resources] !== resourcesLabel(resources)) await resize(docker, c.Id, resources);
      } catch (err) {
        // It now carries the session's name: removed, so that the caller's new container can have it.
        log.warn({ err }, 'a pool container could not be sized for its session; making a new one');
        await removeContainer(docker, c.Id, 0).catch(() => undefined);
        this.claimed.delete(c.Id);
        return null;
      }
      // Still claimed for a while: another take's list of candidates, made before this rename, shows
      // the container under its pool name, and must not take it a second time.
      setTimeout(() => this.claimed.delete(c.Id), TAKEN_STAYS_CLAIMED_MS).unref();
      void this.refill();
      return c.Id;
    }
    void this.refill();
    return null;
  }

  /**
   * For /metrics: each app's wanted pool size (as of the last pass) and its pool containers running now
   * (made with its current settings or not yet replaced), by app id and stack.
   */
  async figures(): Promise<{ appId: string; stack: string; target: number; ready: number }[]> {
    const { docker, installation } = this.deps;
    const pool = await docker.listContainers({ filters: { label: [`${LABELS.instance}=${installation}`, `${LABELS.pool}=true`], status: ['running'] } });
    const ready = new Map<string, { stack: string; n: number }>();
    for (const c of pool) {
      const stack = c.Labels[LABELS.stack] ?? '';
      if (!this.isOwn(c.Labels) || !c.Names.some((n) => n.includes('-pool-')) || this.claimed.has(c.Id)) continue;
      const appId = c.Labels[LABELS.appId] ?? '';
      ready.set(appId, { stack, n: (ready.get(appId)?.n ?? 0) + 1 });
    }
    const ids = new Set([...this.targets.keys(), ...ready.keys()]);
    return [...ids].map((appId) => ({
      appId, stack: this.targets.get(appId)?.stack ?? ready.get(appId)!.stack, target: this.targets.get(appId)?.count ?? 0, ready: ready.get(appId)?.n ?? 0,
    }));
  }

  /** This host's whole pool: the sum of `figures()`, for its row in `hosts` (GET /hosts). */
  async totals(): Promise<{ ready: number; target: number }> {
    const figures = await this.figures();
    return { ready: figures.reduce((n, f) => n + f.ready, 0), target: figures.reduce((n, f) => n + f.target, 0) };
  }

  /**
   * A pool container this host made: of one of its stacks, and labelled with its id. Hosts that share a
   * Docker engine (several host processes on one machine) would otherwise take, count and remove each
   * other's as their own. One without the label is from a version that did not set it, when one host
   * had the engine to itself.
   */
  private isOwn(labels: Record<string, string>): boolean {
    const host = labels[LABELS.host];
    return this.deps.stacks.includes(labels[LABELS.stack] ?? '') && (host === undefined || host === this.deps.hostId);
  }

  private async keep(): Promise<void> {
    const { docker, db, installation, stacks, log } = this.deps;
    if (!stacks.length) return;
    const apps = await db.selectFrom('apps as a')
      .innerJoin('stacks as s', 's.id', 'a.stack_id')
      .innerJoin('accounts as acc', 'acc.id', 'a.account_id')
      .selectAll('a')
      .select(['s.name as stack_name', 'acc.handle as account_handle', 'acc.plan', 'acc.image_prefixes'])
      .where('s.name', 'in', stacks)
      .execute();
    const wanted = new Map<string, { app: (typeof apps)[number]; hash: string; count: number }>();
    for (const app of apps) {
      if (app.warm_pool <= 0) continue;
      // No pool for an app its account may no longer run.
      const problem = await grantProblem(db, { id: Number(app.account_id), handle: app.account_handle, image_prefixes: app.image_prefixes },
        { id: Number(app.stack_id), name: app.stack_name }, app.image);
      if (problem) continue;
      let hash: string;
      try {
        hash = settingsHash(appContainerSettings(app, installation, this.deps.secrets));
      } catch {
        continue; // a network no one may use: sessions of the app are refused with the reason
      }
      wanted.set(String(app.id), { app, hash, count: Number(app.warm_pool) });
    }
    this.targets = new Map([...wanted].map(([id, w]) => [id, { stack: w.app.stack_name, count: w.count }]));

    const pool = await docker.listContainers({ all: true, filters: { label: [`${LABELS.instance}=${installation}`, `${LABELS.pool}=true`] } });
    const kept = new Map<string, number>();
    for (const c of pool) {
      if (this.claimed.has(c.Id)) continue;
      const poolName = c.Names.find((n) => n.includes('-pool-'));
      if (!poolName) continue; // serving a session: the session's to remove
      if (!this.isOwn(c.Labels)) continue; // another host's
      const appId = c.Labels[LABELS.appId] ?? '';
      const w = wanted.get(appId);
      const have = kept.get(appId) ?? 0;
      const fits = w && c.Labels[LABELS.settings] === w.hash && c.State === 'running' && have < w.count;
      if (fits) {
        kept.set(appId, have + 1);
        continue;
      }
      // By its pool name: a container renamed for a session meanwhile is not found under it.
      log.info({ container: c.Id.slice(0, 12), app: c.Labels[LABELS.app] }, 'removing a warm pool container that is no longer wanted');
      await removeContainer(docker, poolName.replace(/^\//, ''), 0).catch((err) => log.warn({ err }, 'removing a pool container failed'));
    }
    for (const [appId, w] of wanted) {
      for (let n = kept.get(appId) ?? 0; n < w.count; n++) await this.create(w.app, w.hash);
    }
  }

  private async create(app: { id: number; handle: string; account_handle: string; stack_name: string; plan: string } & Parameters<typeof appContainerSettings>[0], hash: string) {
    const { docker, installation, hostId, initPath, pidsLimit } = this.deps;
    const settings = appContainerSettings(app, installation, this.deps.secrets);
    const resources = { memoryMb: POOL_CONTAINER_MB, cpus: planCpus(app.plan) };
    if (!app.network) settings.network = await this.deps.egress.sessionNetwork();
    await createAndStart(docker, {
      name: poolContainerName(installation),
      labels: {
        [LABELS.instance]: installation,
        [LABELS.pool]: 'true',
        [LABELS.appId]: String(app.id),
        [LABELS.app]: app.handle,
        [LABELS.account]: app.account_handle,
        [LABELS.stack]: app.stack_name,
        [LABELS.settings]: hash,
        [LABELS.host]: hostId,
        [LABELS.resources]: resourcesLabel(resources),
      },
      settings,
      resources: { ...resources, pidsLimit },
      initPath,
    });
  }
}
