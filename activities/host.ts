import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type Docker from 'dockerode';
import type { Db } from '../lib/db.js';
import { LABELS, dockerMessage, dockerStatus } from '../lib/docker.js';
import { grantProblem } from '../domain/grants.js';
import { isOurs, type Installation } from '../lib/instance.js';
import { announceContainerKnown } from '../domain/record-news.js';
import {
  StepTimer, appContainerSettings, createAndStart, inspectOrNull, legacyContainerName, removeContainer,
  sessionContainerName, settingsHash,
} from '../host/containers.js';
import type { WarmPool } from '../host/warm-pool.js';
import type { SecretBox } from '../lib/secrets.js';
import { openEnv } from '../domain/app-env.js';
import { JournalWriter } from '../journal/writer.js';
import { announceJournalAppended } from '../journal/news.js';
import { closeJournal } from '../journal/close.js';
import { runDetachedProgram } from '../host/detached.js';
import type { ContainerSpecRequest, DetachedProgramExit, DetachedProgramRequest, EndSessionRequest } from '../shapes/session-workflow.js';
import type { EgressGuard } from '../host/egress.js';
import { recordJournalStarted } from '../journal/rows.js';

export interface HostActivityDeps {
  docker: Docker;
  db: Db;
  hostId: string;
  installation: Installation;
  dataDir: string;
  initPath: string;
  secrets: SecretBox;
  pool?: WarmPool;
  /** The session network, its egress rules set. */
  egress: EgressGuard;
  /** A journal's size bound (ESSH_JOURNAL_MAX_MB), for the output of detached jobs. */
  journalMaxBytes?: number;
}

/** Activities that touch a stack's Docker engine and its journals; they run on that stack's host task queue. */
export function createHostActivities(deps: HostActivityDeps) {
  const { docker, db, hostId, installation } = deps;

  const provisionError = (message: string) =>
    ApplicationFailure.create({ type: 'ProvisionError', message, nonRetryable: true });

  /** The steps of provisionContainer, each reported to `steps` as it is done. */
  async function provision(spec: ContainerSpecRequest, steps: StepTimer): Promise<{ containerId: string }> {
    // The app's settings (env may hold secrets) are read here rather than carried in workflow history.
    const app = await db.selectFrom('apps').selectAll().where('id', '=', spec.appId).executeTakeFirst();
    if (!app) throw provisionError(`app ${spec.app} no longer exists`);
    const account = await db.selectFrom('accounts').selectAll().where('id', '=', app.account_id).executeTakeFirstOrThrow();
    const notGranted = await grantProblem(db, account, { id: Number(app.stack_id), name: spec.stack }, app.image);
    if (notGranted) throw provisionError(notGranted);
    let settings;
    try {
      settings = appContainerSettings(app, installation.id, deps.secrets);
    } catch (err) {
      throw provisionError((err as Error).message);
    }
    steps.done('app');
    await startJournal(spec, app.account_id);
    steps.done('journal');

    const name = sessionContainerName(installation.id, spec.operationId);
    const resources = { memoryMb: spec.containerSizeMb, cpus: spec.cpus, pidsLimit: spec.pidsLimit };
    let containerId: string;
    const existing = await inspectOrNull(docker, name);
    steps.done('inspect');
    if (existing) {
      if (!isOurs(installation, existing.Config.Labels?.[LABELS.instance])) {
        throw provisionError(`a container named ${name} already exists on the stack's Docker host and belongs to another installation; remove it (docker rm -f ${name})`);
      }
      containerId = existing.Id;
      if (!existing.State.Running) await docker.getContainer(containerId).start().catch((err) => {
        if (dockerStatus(err) !== 304) throw err;
      });
    } else {
      // An app that keeps no pool has no pool container to look for (a list of every container on the engine).
      const pooled = app.warm_pool > 0 ? await deps.pool?.take(app.id, settingsHash(settings), name, resources) : null;
      steps.done('pool');
      if (pooled) {
        containerId = pooled;
      } else {
        // The installation's network joins by id: two networks may briefly share its name.
        const network = app.network ?? await deps.egress.sessionNetwork().catch((err) => {
          throw provisionError(`essh's session network could not be made: ${(err as Error).message}`);
        });
        steps.done('network');
        try {
          containerId = await createAndStart(docker, {
            name, settings: { ...settings, network }, resources, initPath: deps.initPath,
            labels: {
              [LABELS.instance]: installation.id,
              [LABELS.session]: 'true',
              [LABELS.operationId]: String(spec.operationId),
              [LABELS.appId]: String(app.id),
              [LABELS.app]: spec.app,
              [LABELS.account]: spec.account,
              [LABELS.stack]: spec.stack,
              [LABELS.host]: hostId,
            },
            steps,
          });
        } catch (err) {
          throw provisionFailure(err, app.image, settings.network);
        }
      }
    }
    // The portal in this process attaches as soon as it knows the container, before the workflow's
    // next task has recorded it: that round trip is on the way to the user's prompt.
    announceContainerKnown(spec.operationId, containerId);
    log.info('container ready', { operationId: spec.operationId, containerId: containerId.slice(0, 12) });
    // Where a slow provisioning spent its time (the Docker engine, most often, when it serves hundreds of containers).
    if (steps.totalMs() > SLOW_PROVISIONING_MS) log.warn('slow provisioning', { operationId: spec.operationId, ms: steps.totalMs(), steps: steps.summary() });
    return { containerId };
  }

  return {
    /**
     * Gives the session a running container: one from the app's warm pool when one fits, else a new
     * one. Its main process is the idle init; the session's program starts by `docker exec` when the
     * client attaches. Idempotent: a retry finds the container an earlier attempt got (by its name).
     */
    async provisionContainer(spec: ContainerSpecRequest): Promise<{ containerId: string }> {
      // Each step done is the activity's heartbeat detail: `temporal workflow describe` shows where a
      // provisioning that takes long stands.
      const ctx = Context.current();
      let standing: { done: string; ms: number };
      const beat = (detail: { done: string; ms: number }) => ctx.heartbeat((standing = detail));
      const steps = new StepTimer((step, ms) => beat({ done: step, ms }));
      // The first heartbeat says the code began, and how long after the task was scheduled: a stall
      // seen at about 480 containers (docs/scale.md) left no step at all behind.
      beat({ done: 'picked up', ms: Date.now() - ctx.info.currentAttemptScheduledTimestampMs });
      // And a beat every few seconds however long a step takes: the workflow's heartbeat timeout then
      // tells a worker that is gone (its process killed or stopped, the task lost with it) from an
      // engine that is slow, and the attempt is retried on a live worker at once, not after minutes.
      const alive = setInterval(() => beat(standing), PROVISION_LIVENESS_BEAT_MS);
      try {
        return await provision(spec, steps);
      } finally {
        clearInterval(alive);
      }
    },

    /**
     * A detached job's program: started in its container at once, its output journaled until it exits
     * or its container goes (a terminate, expiry). Resolves with its exit code.
     */
    async runDetachedProgram(req: DetachedProgramRequest): Promise<DetachedProgramExit> {
      const ctx = Context.current();
      const alive = setInterval(() => ctx.heartbeat(), PROVISION_LIVENESS_BEAT_MS);
      try {
        return await runDetachedProgram(deps, req, ctx.cancellationSignal);
      } finally {
        clearInterval(alive);
      }
    },

    /**
     * However the session ended: removes its container (which ends the program and anything it left
     * behind), then closes its journal with the `ended` record, the last of its drain events.
     */
    async endSession(req: EndSessionRequest): Promise<void> {
      const target = req.containerId ?? sessionContainerName(installation.id, req.operationId);
      await removeContainer(docker, target, req.stopGraceS);
      await closeJournal(deps, req, (msg, fields) => log.warn(msg, fields));
    },

    /** Sessions started before exec sessions (their workflows' teardown): removes the container by its old name too. */
    async removeContainer(req: { operationId: number; stopGraceS: number }): Promise<{ removed: boolean }> {
      const byName = await removeContainer(docker, sessionContainerName(installation.id, req.operationId), req.stopGraceS);
      if (byName.removed) return byName;
      return removeContainer(docker, legacyContainerName(req.operationId), req.stopGraceS);
    },
  };

  /** The journal's first record and its row, once: a retried attempt finds both. */
  async function startJournal(spec: ContainerSpecRequest, accountId: number) {
    const known = await db.selectFrom('session_journals').select('host_id').where('operation_id', '=', spec.operationId).executeTakeFirst();
    // An attempt on another host of the stack (the first went silent with the task) puts the container,
    // and so the journal, here: the row names this host, which the host-loss sweep goes by.
    if (known?.host_id === hostId) return;
    const op = await db.selectFrom('operations as o')
      .innerJoin('users as u', 'u.id', 'o.user_id')
      .select(['o.created_at', 'o.command', 'o.env', 'u.id as user_id', 'u.name as user_name', 'u.email as user_email'])
      .where('o.id', '=', spec.operationId).executeTakeFirstOrThrow();
    // The drains learn that extra env was given, and its names; its values stay sealed.
    const envKeys = op.env ? Object.keys(openEnv(deps.secrets, op.env)).sort() : [];
    const writer = JournalWriter.open(deps.dataDir, spec.operationId);
    try {
      if (writer.isEmpty) {
        writer.started({
          user: { id: Number(op.user_id), name: op.user_name, email: op.user_email },
          app: spec.app, app_id: spec.appId, account: spec.account, container_size_mb: spec.containerSizeMb,
          command: op.command ? (JSON.parse(op.command) as string[]) : null, container_id: null, created_at: op.created_at,
          ...(envKeys.length ? { env_keys: envKeys } : {}),
          ...(spec.detach ? { detached: true } : {}),
        });
      }
    } finally {
      writer.close();
    }
    await recordJournalStarted(db, { operationId: spec.operationId, accountId, hostId });
    announceJournalAppended(spec.operationId);
  }

  function provisionFailure(err: unknown, image: string, network: string) {
    const status = dockerStatus(err);
    const msg = dockerMessage(err);
    if (status === 404 && /image/i.test(msg)) {
      return provisionError(`image ${image} is not on the stack's Docker host (${msg}); build or load it there, or point the app at an image that exists`);
    }
    if (status === 404 && /network/i.test(msg)) return provisionError(`network ${network} does not exist on the stack's Docker host (${msg})`);
    if (status === 400 || status === 409) return provisionError(`Docker refused the container: ${msg}`);
    if (status === 500 && /(mount|bind|no such file)/i.test(msg)) {
      return provisionError(`the container could not start: ${msg} (is the idle init at ESSH_INIT_PATH on the Docker host?)`);
    }
    if (status === 500 || status === 400) return provisionError(`the container could not start: ${msg}`);
    return err;
  }
}

export type HostActivities = ReturnType<typeof createHostActivities>;

const SLOW_PROVISIONING_MS = 10_000;
/** Well inside the provisioning's heartbeat timeout (workflows/session.ts): three beats may be lost. */
export const PROVISION_LIVENESS_BEAT_MS = 5_000;
