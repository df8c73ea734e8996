import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface CliConfig {
  api_url: string;
  token: string;
}

/** A failure meant for the user: printed as one line, then a non-zero exit. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ESSH_CONFIG) return path.resolve(env.ESSH_CONFIG);
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'essh', 'config.json');
}

/** The stored login, with ESSH_API_URL / ESSH_TOKEN taking precedence over it. */
export async function resolveConfig(env: NodeJS.ProcessEnv = process.env): Promise<CliConfig> {
  const file = configPath(env);
  let stored: Partial<CliConfig> = {};
  try {
    stored = JSON.parse(await readFile(file, 'utf8')) as Partial<CliConfig>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CliError(`cannot read ${file} (${(err as Error).message}); fix or delete it, then run essh login again`);
    }
  }
  const api_url = env.ESSH_API_URL || stored.api_url;
  const token = env.ESSH_TOKEN || stored.token;
  if (!api_url || !token) {
    throw new CliError('not logged in: run `essh login --api URL --token TOKEN` (or set ESSH_API_URL and ESSH_TOKEN)');
  }
  return { api_url: api_url.replace(/\/+$/, ''), token };
}

/** Written 0600 in a 0700 directory: the file holds an API token. */
export async function saveConfig(config: CliConfig, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const file = configPath(env);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  await chmod(file, 0o600);
  return file;
}
