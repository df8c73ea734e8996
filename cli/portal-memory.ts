import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { configPath } from './config.js';
import { EarlyPortalConnection, isSamePortal, type PortalAddress, type PortalTarget } from './portal-client.js';

/**
 * The portal each API sent the CLI to last (host, port, host key), so that the next session's SSH
 * connection and key exchange can start while the API is still creating it (EarlyPortalConnection).
 * Beside the login, in a file of its own: it holds no secret (no token, no user name), only what any
 * `connect` block shows, and is a hint: unreadable or malformed, it is as if it were not there.
 */
export function portalMemoryPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(path.dirname(configPath(env)), 'portals.json');
}

type PortalMemory = Record<string, PortalAddress>;

const isPortalAddress = (v: unknown): v is PortalAddress => {
  const a = v as Partial<PortalAddress> | null;
  return !!a && typeof a.host === 'string' && a.host !== '' && Number.isInteger(a.port) && a.port! > 0 && a.port! < 65536 &&
    typeof a.host_key === 'string' && /^[\w@.-]+ [A-Za-z0-9+/]+={0,2}(\s|$)/.test(a.host_key);
};

async function readMemory(file: string): Promise<PortalMemory> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as unknown;
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as PortalMemory) : {};
  } catch {
    return {};
  }
}

/** The portal remembered for the API at `apiUrl`, or null. */
export async function recallPortal(apiUrl: string, env: NodeJS.ProcessEnv = process.env): Promise<PortalAddress | null> {
  const entry = (await readMemory(portalMemoryPath(env)))[apiUrl];
  return isPortalAddress(entry) ? { host: entry.host, port: entry.port, host_key: entry.host_key } : null;
}

/**
 * Remembers `address` for the API at `apiUrl`. Written aside and renamed into place, so that two
 * `essh` runs at once never leave half a file; 0600 in a 0700 directory, as the login is.
 */
export async function rememberPortal(apiUrl: string, address: PortalAddress, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const file = portalMemoryPath(env);
  const memory = await readMemory(file);
  memory[apiUrl] = { host: address.host, port: address.port, host_key: address.host_key };
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const aside = `${file}.${process.pid}.tmp`;
  await writeFile(aside, JSON.stringify(memory, null, 2) + '\n', { mode: 0o600 });
  await rename(aside, file);
}

/**
 * Sends the request that answers a `connect` block (`ask`: a new session, a watch) while connecting to
 * the portal remembered for this API; once answered, remembers the portal it names if that changed.
 * `early` goes to openPortalShell/openPortalSftp (which use it only for that same portal) or is closed
 * by the caller; `remembered` settles once the memory is written (a failure to write it is no error).
 */
export async function askWithEarlyPortal<T extends { connect: PortalTarget }>(
  apiUrl: string,
  ask: () => Promise<T>,
): Promise<{ answer: T; early: EarlyPortalConnection | null; remembered: Promise<void> }> {
  const recalled = recallPortal(apiUrl);
  const asking = ask();
  // Handled below; without this a quick refusal would count as unhandled while the memory is read.
  asking.catch(() => undefined);
  const early = recalled.then((address) => (address ? new EarlyPortalConnection(address) : null));
  let answer: T;
  try {
    answer = await asking;
  } catch (err) {
    void early.then((e) => e?.close());
    throw err;
  }
  const { host, port, host_key } = answer.connect;
  const last = await recalled;
  const remembered = host_key && !(last && isSamePortal(last, answer.connect))
    ? rememberPortal(apiUrl, { host, port, host_key }).catch(() => undefined)
    : Promise.resolve();
  return { answer, early: await early, remembered };
}
