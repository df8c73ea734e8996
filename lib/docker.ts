import Docker from 'dockerode';

/** The stack host's engine: DOCKER_HOST when set (dockerode reads it), else the local socket. */
export function openDocker(): Docker {
  return new Docker();
}

/** dockerode rejects with an error carrying the engine's HTTP status; 404 means "no such object". */
export function dockerStatus(err: unknown): number | undefined {
  return typeof (err as any)?.statusCode === 'number' ? (err as any).statusCode : undefined;
}

export function dockerMessage(err: unknown): string {
  const json = (err as any)?.json;
  return String(json?.message ?? (err as Error)?.message ?? err).trim();
}

export const LABELS = {
  /** On containers made for one session from the start; a pool container that starts serving one keeps `pool`. */
  session: 'essh.session',
  operationId: 'essh.operation_id',
  /** A warm pool container (host/warm-pool.ts); its name says which session it serves, if any. */
  pool: 'essh.pool',
  appId: 'essh.app_id',
  /** The app settings a pool container was made with (host/containers.ts settingsHash). */
  settings: 'essh.settings',
  /** The memory (MB) and CPUs a pool container was started with, `1024m,1`: a session of that size skips the resize. */
  resources: 'essh.resources',
  app: 'essh.app',
  account: 'essh.account',
  stack: 'essh.stack',
  instance: 'essh.instance',
  /** Which host worker created the container (ESSH_HOST_ID): shows which machine serves a stack. */
  host: 'essh.host',
} as const;
