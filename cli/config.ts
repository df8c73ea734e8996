import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface CliConfig {
  api_url: string;
  token: string;
}

/** Where the login in use came from, for `essh whoami`. */
export interface ResolvedConfig extends CliConfig {
  source: { api_url: string; token: string };
}

/**
 * The exit status of `essh ssh` when essh itself failed (API error, portal unreachable, token
 * refused…), as OpenSSH does, so that it is told apart from the remote program's own status.
 */
export const SSH_OWN_FAILURE = 255;

/** A failure meant for the user: printed as one line, then a non-zero exit. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    /** The API's HTTP status, when the API refused. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ESSH_CONFIG) return path.resolve(env.ESSH_CONFIG);
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'essh', 'config.json');
}

/** The stored login (or an empty one): what `essh login` wrote, untouched by the environment. */
export async function readStoredConfig(env: NodeJS.ProcessEnv = process.env): Promise<Partial<CliConfig>> {
  const file = configPath(env);
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Partial<CliConfig>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError(`cannot read ${file} (${(err as Error).message}); fix or delete it, then run essh login again`);
  }
}

/**
 * The token goes in every request's Authorization header: over plain http it would cross the network
 * readable by anyone on the way. Only https, or http to this machine itself, is used.
 */
export function checkApiUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`the API URL must be a URL such as https://essh.example.com (got "${raw}")`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (url.protocol === 'http:' && !loopback) {
    throw new CliError(`refusing to send your API token over plain http to ${url.host}: use https://${url.host}${url.pathname === '/' ? '' : url.pathname} (plain http is for the API on this machine only)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`the API URL must start with https:// (got "${raw}")`);
  return url.toString().replace(/\/+$/, '');
}

/** The stored login, with ESSH_API_URL / ESSH_TOKEN taking precedence over it. */
export async function resolveConfig(env: NodeJS.ProcessEnv = process.env): Promise<ResolvedConfig> {
  const file = configPath(env);
  const stored = await readStoredConfig(env);
  const api_url = env.ESSH_API_URL || stored.api_url;
  const token = env.ESSH_TOKEN || stored.token;
  if (!api_url || !token) {
    throw new CliError(
      stored.api_url || env.ESSH_API_URL
        ? 'not logged in: run `essh login` (or set ESSH_TOKEN)'
        : 'not logged in: run `essh login --api URL` (or set ESSH_API_URL and ESSH_TOKEN)',
    );
  }
  return {
    api_url: checkApiUrl(api_url),
    token,
    source: { api_url: env.ESSH_API_URL ? 'ESSH_API_URL' : file, token: env.ESSH_TOKEN ? 'ESSH_TOKEN' : file },
  };
}

/** Written 0600 in a 0700 directory: the file holds an API token. */
export async function saveConfig(config: Partial<CliConfig>, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const file = configPath(env);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  await chmod(file, 0o600);
  return file;
}

/**
 * Forgets the stored token. The API URL stays (it is no secret), so a later `essh login` needs no
 * `--api`; the file goes when nothing else is left in it. Answers whether there was a token to forget.
 */
export async function removeStoredToken(env: NodeJS.ProcessEnv = process.env): Promise<{ file: string; hadToken: boolean }> {
  const file = configPath(env);
  const stored = await readStoredConfig(env);
  const hadToken = Boolean(stored.token);
  const { token: _dropped, ...rest } = stored;
  if (Object.keys(rest).length === 0) await rm(file, { force: true });
  else if (hadToken) await saveConfig(rest, env);
  return { file, hadToken };
}
