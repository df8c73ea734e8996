import { ApplicationFailure, log } from '@temporalio/activity';
import type Docker from 'dockerode';
import type { Db } from '../lib/db.js';
import { LABELS, dockerMessage, dockerStatus } from '../lib/docker.js';
import { grantProblem } from '../lib/grants.js';
import { forbiddenNetworkReason, sessionNetworkName } from '../lib/networks.js';
import { announceContainerKnown } from '../lib/record-news.js';
import { containerName, type ContainerSpecRequest } from '../workflows/definitions.js';

const MB = 1024 * 1024;

/**
 * The only capabilities a session's processes keep (docs/threat-model.md): enough for root in the
 * container to own, read and write its files, switch to the app's user and signal its own processes.
 * Raw sockets, device nodes, chroot, audit, file capabilities and the rest of Docker's default set go.
 */
export const SESSION_CAPABILITIES = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'NET_BIND_SERVICE'];

/** Activities that touch a stack's Docker engine; they run on that stack's host task queue. */
export function createHostActivities(deps: { docker: Docker; db: Db; hostId: string }) {
  const { docker, db, hostId } = deps;

  const provisionError = (message: string) =>
    ApplicationFailure.create({ type: 'ProvisionError', message, nonRetryable: true });

  return {
    /**
     * Creates and starts the session's container. Idempotent: a retry after a crash finds the container
     * an earlier attempt created (by its name) and only starts it.
     */
    async provisionContainer(spec: ContainerSpecRequest): Promise<{ containerId: string }> {
      // The app's settings (env may hold secrets) are read here rather than carried in workflow
      // history.
      const app = await db.selectFrom('apps').selectAll().where('id', '=', spec.appId).executeTakeFirst();
      if (!app) throw provisionError(`app ${spec.app} no longer exists`);
      const account = await db.selectFrom('accounts').selectAll().where('id', '=', app.account_id).executeTakeFirstOrThrow();
      const notGranted = await grantProblem(db, account, { id: Number(app.stack_id), name: spec.stack }, app.image);
      if (notGranted) throw provisionError(notGranted);
      const env = Object.entries(JSON.parse(app.env) as Record<string, string>).map(([k, v]) => `${k}=${v}`);
      const appCommand = app.command ? (JSON.parse(app.command) as string[]) : undefined;
      const name = containerName(spec.operationId);
      const refused = app.network ? forbiddenNetworkReason(app.network) : null;
      if (refused) throw provisionError(`app ${spec.app} names network "${app.network}", which is not allowed: ${refused}; an operator must change it`);
      const network = app.network ?? (await ensureSessionNetwork(docker, spec.instanceId));

      let container = docker.getContainer(name);
      let info = await container.inspect().catch((err) => {
        if (dockerStatus(err) === 404) return null;
        throw err;
      });
      if (info && info.Config.Labels?.[LABELS.instance] !== spec.instanceId) {
        throw provisionError(
          `a container named ${name} already exists on the stack's Docker host and belongs to another installation; remove it (docker rm -f ${name})`,
        );
      }
      if (!info) {
        try {
          container = await docker.createContainer({
            name,
            Image: app.image,
            Cmd: spec.command ?? appCommand,
            Env: env,
            WorkingDir: app.working_dir ?? undefined,
            User: app.user ?? undefined,
            Tty: spec.tty !== false,
            OpenStdin: true,
            // A hang-up is what a shell gets when its terminal goes away; with an init process as PID 1
            // the shell receives it and exits at once instead of waiting out the stop grace period.
            StopSignal: 'SIGHUP',
            // Without a TTY, the client's end of input (EOF) must reach the program as the end of its stdin.
            StdinOnce: spec.tty === false,
            AttachStdin: false,
            AttachStdout: false,
            AttachStderr: false,
            Labels: {
              [LABELS.session]: 'true',
              [LABELS.operationId]: String(spec.operationId),
              [LABELS.app]: spec.app,
              [LABELS.account]: spec.account,
              [LABELS.stack]: spec.stack,
              [LABELS.instance]: spec.instanceId,
              [LABELS.host]: hostId,
            },
            HostConfig: {
              Memory: spec.containerSizeMb * MB,
              // Equal to Memory: no swap beyond the container size.
              MemorySwap: spec.containerSizeMb * MB,
              RestartPolicy: { Name: 'no' },
              Privileged: false,
              SecurityOpt: ['no-new-privileges'],
              PidsLimit: spec.pidsLimit,
              CapDrop: ['ALL'],
              CapAdd: SESSION_CAPABILITIES,
              ...(spec.cpus ? { NanoCpus: Math.round(Math.min(spec.cpus, await engineCpus(docker)) * 1e9) } : {}),
              NetworkMode: network,
              PublishAllPorts: false,
              AutoRemove: false,
              Init: true,
            },
          });
        } catch (err) {
          const status = dockerStatus(err);
          const msg = dockerMessage(err);
          if (status === 404 && /image/i.test(msg)) {
            throw provisionError(
              `image ${app.image} is not on the stack's Docker host (${msg}); build or load it there, or point the app at an image that exists`,
            );
          }
          if (status === 404 && /network/i.test(msg)) {
            throw provisionError(`network ${app.network} does not exist on the stack's Docker host (${msg})`);
          }
          if (status === 400 || status === 409) throw provisionError(`Docker refused the container: ${msg}`);
          throw err;
        }
      }
      // A container just created is in state `created`: asking the engine again would only add a round
      // trip to the session's start-up.
      const containerId = info?.Id ?? container.id;
      const status = info?.State.Status ?? 'created';
      if (spec.startOnAttach) {
        // Started by the portal once it is attached (create, attach, start), so nothing it prints is
        // missed. The portal may attach as soon as it knows the container: telling it here rather than
        // through the workflow's next task saves that round trip on the way to the user's prompt.
        await db
          .updateTable('operations')
          .set({ container_id: containerId })
          .where('id', '=', spec.operationId)
          .where('state', '=', 'provisioning')
          .execute();
        announceContainerKnown(spec.operationId);
      } else if (status === 'created') {
        try {
          await container.start();
        } catch (err) {
          const status = dockerStatus(err);
          if (status !== 304) {
            const msg = dockerMessage(err);
            if (status === 400 || status === 500) throw provisionError(`the container could not start: ${msg}`);
            throw err;
          }
        }
      }
      log.info('container ready', { operationId: spec.operationId, containerId: containerId.slice(0, 12) });
      return { containerId };
    },

    /** Stops (with a grace period) and removes the session's container; nothing to do if it is gone. */
    async removeContainer(req: { operationId: number; stopGraceS: number }): Promise<{ removed: boolean }> {
      return removeSessionContainer(docker, containerName(req.operationId), req.stopGraceS);
    },
  };
}

let cpusOfEngine: Promise<number> | undefined;
/** The engine refuses a CPU limit above the CPUs its host has: a plan's 8 CPUs on a 2-CPU host become 2. */
function engineCpus(docker: Docker): Promise<number> {
  cpusOfEngine ??= docker.info().then((i: { NCPU: number }) => i.NCPU).catch((err) => {
    cpusOfEngine = undefined;
    throw err;
  });
  return cpusOfEngine;
}

const sessionNetworks = new Map<string, Promise<string>>();

/**
 * The installation's session network on this engine (see lib/networks.ts), made if missing. Another
 * process making it at the same moment is fine: CheckDuplicate turns the second into a 409.
 */
export function ensureSessionNetwork(docker: Docker, installation: string): Promise<string> {
  const name = sessionNetworkName(installation);
  let made = sessionNetworks.get(name);
  if (!made) {
    made = (async () => {
      const existing = await docker.listNetworks({ filters: { name: [name] } });
      if (existing.some((n) => n.Name === name)) return name;
      try {
        await docker.createNetwork({
          Name: name, Driver: 'bridge', CheckDuplicate: true,
          Options: { 'com.docker.network.bridge.enable_icc': 'false' },
          Labels: { [LABELS.instance]: installation },
        });
      } catch (err) {
        if (dockerStatus(err) !== 409) throw err;
      }
      return name;
    })();
    sessionNetworks.set(name, made);
    made.catch(() => sessionNetworks.delete(name));
  }
  return made;
}

export async function removeSessionContainer(docker: Docker, nameOrId: string, stopGraceS: number) {
  const container = docker.getContainer(nameOrId);
  try {
    await container.stop({ t: stopGraceS });
  } catch (err) {
    const status = dockerStatus(err);
    // 304: already stopped; 404: already gone; 409: removal already in progress.
    if (status === 404) return { removed: false };
    if (status !== 304 && status !== 409) throw err;
  }
  try {
    await container.remove({ force: true, v: true });
  } catch (err) {
    const status = dockerStatus(err);
    if (status === 404) return { removed: false };
    if (status === 409) return { removed: true }; // another remover got there first
    throw err;
  }
  return { removed: true };
}

export type HostActivities = ReturnType<typeof createHostActivities>;
