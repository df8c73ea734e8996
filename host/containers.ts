import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import type Docker from 'dockerode';
import type { Selectable } from 'kysely';
import type { AppsTable } from '../lib/db.js';
import { LABELS, dockerStatus } from '../lib/docker.js';
import { openEnv } from '../domain/app-env.js';
import { forbiddenNetworkReason, sessionNetworkName } from '../lib/networks.js';
import { removeEgressRules } from './egress.js';
import { removeSessionNetwork } from './session-network.js';
import type { SecretBox } from '../lib/secrets.js';

const MB = 1024 * 1024;

/** Where the idle init (host/init/essh-init.c) is mounted, read-only, in every session container. */
export const INIT_IN_CONTAINER = '/.essh/init';
/** Where the portal's port-forwarding relay (host/init/essh-relay.c) is mounted, read-only, beside it. */
export const RELAY_IN_CONTAINER = '/.essh/relay';
/** The relay's path on the Docker host: beside the init, where scripts/setup.sh and the build put both. */
export const relayBesideInit = (initPath: string) => path.join(path.dirname(initPath), 'essh-relay');
/**
 * Where OpenSSH's sftp-server is mounted, read-only, with the shared libraries it loads and their
 * dynamic loader (scripts/sftp-server-folder.sh copies them from the host's Debian openssh-sftp-server):
 * images without an SFTP server of their own, busybox or distroless, can still take and give files.
 */
export const SFTP_IN_CONTAINER = '/.essh/sftp';
/** The folder's path on the Docker host: beside the init, as the relay. */
export const sftpBesideInit = (initPath: string) => path.join(path.dirname(initPath), 'essh-sftp');
/**
 * The portal's SFTP subsystem in a session's container: sftp-server run by the folder's own loader (the
 * image's libc, if it has one, is never used), its log on stderr at INFO (the user it runs as).
 */
export const SFTP_SERVER_COMMAND = [
  `${SFTP_IN_CONTAINER}/ld.so`, '--library-path', SFTP_IN_CONTAINER, `${SFTP_IN_CONTAINER}/sftp-server`, '-e', '-l', 'INFO',
];

/**
 * The only capabilities a session's processes keep (docs/threat-model.md): enough for root in the
 * container to own, read and write its files, switch to the app's user and signal its own processes.
 * Raw sockets, device nodes, chroot, audit, file capabilities and the rest of Docker's default set go.
 */
export const SESSION_CAPABILITIES = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'NET_BIND_SERVICE'];

// --- names (CONTRACT §7) --------------------------------------------------------------------------
export const sessionContainerName = (installation: string, operationId: number | string) => `essh-${installation}-${operationId}`;
export const poolContainerName = (installation: string) => `essh-${installation}-pool-${randomBytes(4).toString('hex')}`;
/** What an earlier version named a session's container. */
export const legacyContainerName = (operationId: number | string) => `essh-${operationId}`;

export type ContainerRole = { kind: 'session'; operationId: number } | { kind: 'pool' } | { kind: 'other' };

/** Tells a container of `installation` by its name: Docker cannot relabel a pool container that starts serving a session. */
export function roleOf(name: string, installation: { id: string; legacyId?: string }): ContainerRole {
  const n = name.replace(/^\//, '');
  const prefix = `essh-${installation.id}-`;
  if (n.startsWith(prefix)) {
    const rest = n.slice(prefix.length);
    if (rest.startsWith('pool-')) return { kind: 'pool' };
    if (/^\d+$/.test(rest)) return { kind: 'session', operationId: Number(rest) };
  }
  const legacy = /^essh-(\d+)$/.exec(n);
  if (legacy && installation.legacyId) return { kind: 'session', operationId: Number(legacy[1]) };
  return { kind: 'other' };
}

// --- what a container of an app looks like ----------------------------------------------------------
export interface ContainerSettings {
  image: string;
  env: string[];
  workingDir?: string;
  user?: string;
  network: string;
}

/** The app's container settings; `network` is the app's, or the installation's isolated one. */
export function appContainerSettings(app: Selectable<AppsTable>, installation: string, secrets: SecretBox): ContainerSettings {
  const refused = app.network ? forbiddenNetworkReason(app.network) : null;
  if (refused) throw new Error(`app ${app.handle} names network "${app.network}", which is not allowed: ${refused}; an operator must change it`);
  return {
    image: app.image,
    env: Object.entries(openEnv(secrets, app.env)).map(([k, v]) => `${k}=${v}`),
    workingDir: app.working_dir ?? undefined,
    user: app.user ?? undefined,
    network: app.network ?? sessionNetworkName(installation),
  };
}

/** A pool container serves a session only if it was made with exactly the app's current settings. */
export function settingsHash(s: ContainerSettings): string {
  return createHash('sha256').update(JSON.stringify([s.image, s.env, s.workingDir ?? null, s.user ?? null, s.network])).digest('hex').slice(0, 16);
}

export interface Resources {
  memoryMb: number;
  cpus?: number;
  pidsLimit: number;
}

/**
 * Creates and starts a container whose main process is the idle init (mounted read-only from the
 * host), so that any image with the session's program works, shell or `sleep` or not. The program
 * itself runs later, by `docker exec`, when the client attaches (portal/attachment.ts).
 */
export async function createAndStart(
  docker: Docker,
  opts: { name: string; labels: Record<string, string>; settings: ContainerSettings; resources: Resources; initPath: string; steps?: StepTimer },
): Promise<string> {
  const { settings, resources } = opts;
  const limits = await resourceLimits(docker, resources);
  const container = await docker.createContainer({
    name: opts.name,
    Image: settings.image,
    Entrypoint: [INIT_IN_CONTAINER],
    Cmd: [],
    Env: settings.env,
    WorkingDir: settings.workingDir,
    User: settings.user,
    Labels: opts.labels,
    HostConfig: {
      ...limits,
      PidsLimit: resources.pidsLimit,
      RestartPolicy: { Name: 'no' },
      Privileged: false,
      SecurityOpt: ['no-new-privileges'],
      CapDrop: ['ALL'],
      CapAdd: SESSION_CAPABILITIES,
      NetworkMode: settings.network,
      PublishAllPorts: false,
      AutoRemove: false,
      // The only host paths a session container sees: the init and relay binaries and the SFTP server's folder, read-only.
      Mounts: [
        { Type: 'bind', Source: opts.initPath, Target: INIT_IN_CONTAINER, ReadOnly: true },
        { Type: 'bind', Source: relayBesideInit(opts.initPath), Target: RELAY_IN_CONTAINER, ReadOnly: true },
        { Type: 'bind', Source: sftpBesideInit(opts.initPath), Target: SFTP_IN_CONTAINER, ReadOnly: true },
      ],
    },
  });
  opts.steps?.done('create');
  try {
    await container.start();
  } catch (err) {
    await container.remove({ force: true }).catch(() => undefined);
    throw err;
  }
  opts.steps?.done('start');
  return container.id;
}

/** How long each step of something took, for the log line of one that was slow. */
export class StepTimer {
  private readonly started = Date.now();
  private last = this.started;
  private readonly steps: [string, number][] = [];

  /** `onStep` hears of each step as it is done (an activity's heartbeat: where a pending one stands). */
  constructor(private readonly onStep?: (step: string, ms: number) => void) {}

  done(step: string) {
    const now = Date.now();
    this.steps.push([step, now - this.last]);
    this.onStep?.(step, now - this.last);
    this.last = now;
  }

  totalMs(): number {
    return Date.now() - this.started;
  }

  summary(): Record<string, number> {
    return Object.fromEntries(this.steps);
  }
}

/** Memory (and swap: the same, so none beyond it) and CPUs of a container of this size. */
async function resourceLimits(docker: Docker, r: Resources) {
  return {
    Memory: r.memoryMb * MB,
    MemorySwap: r.memoryMb * MB,
    ...(r.cpus ? { NanoCpus: Math.round(Math.min(r.cpus, await engineCpus(docker)) * 1e9) } : {}),
  };
}

/** Sizes a running container for the session it now serves (a pool container is made at the default size). */
export async function resize(docker: Docker, id: string, r: Omit<Resources, 'pidsLimit'>): Promise<void> {
  await docker.getContainer(id).update(await resourceLimits(docker, { ...r, pidsLimit: 0 }));
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

/**
 * Removes everything an installation made on an engine: its containers (sessions and warm pool), its
 * session network and that network's egress rules (host/egress.ts). Only for installations that are thrown away (a test file's, a benchmark's): a
 * real one keeps its network for as long as it runs sessions, and the engine has address ranges for
 * a few dozen networks only.
 */
export async function removeInstallationFromEngine(docker: Docker, installation: string): Promise<void> {
  const left = await docker.listContainers({ all: true, filters: { label: [`${LABELS.instance}=${installation}`] } });
  await Promise.all(left.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
  await removeSessionNetwork(docker, installation);
  await removeEgressRules(installation);
}

/** Stops (with a grace period) and removes a container; nothing to do if it is gone. */
export async function removeContainer(docker: Docker, nameOrId: string, stopGraceS: number): Promise<{ removed: boolean }> {
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

export async function inspectOrNull(docker: Docker, nameOrId: string) {
  return docker.getContainer(nameOrId).inspect().catch((err) => {
    if (dockerStatus(err) === 404) return null;
    throw err;
  });
}

const programs = new Map<string, { at: number; program: Promise<string[]> }>();
/**
 * What an image runs by default (its entrypoint and command): the session's program when neither the
 * session nor the app names one. Cached briefly: one inspect per image per minute at most.
 */
export function imageProgram(docker: Docker, image: string): Promise<string[]> {
  const hit = programs.get(image);
  if (hit && Date.now() - hit.at < 60_000) return hit.program;
  const program = docker.getImage(image).inspect().then((i) => {
    const p = [...(i.Config?.Entrypoint ?? []), ...(i.Config?.Cmd ?? [])];
    return p.length ? p : ['/bin/sh'];
  });
  programs.set(image, { at: Date.now(), program });
  program.catch(() => programs.delete(image));
  return program;
}

