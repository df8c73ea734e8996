import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';

// ssh2 is CommonJS: Node's ESM loader only offers its default export.
const { utils } = ssh2;

export const HOST_KEY_FILE = 'ssh_host_ed25519_key';

/**
 * The portal's host key, made once and kept under the data dir: clients pin it in known_hosts, so it
 * must survive restarts. Written exclusively (`wx`) so two processes starting at once cannot both win.
 */
export async function loadOrCreateHostKey(dataDir: string): Promise<Buffer> {
  const file = path.join(dataDir, HOST_KEY_FILE);
  const existing = await readFile(file).catch((err) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (existing) return existing;
  await mkdir(dataDir, { recursive: true });
  const { private: privateKey, public: publicKey } = utils.generateKeyPairSync('ed25519', { comment: 'essh portal' });
  try {
    await writeFile(file, privateKey, { mode: 0o600, flag: 'wx' });
    await chmod(file, 0o600);
    await writeFile(`${file}.pub`, publicKey + '\n', { mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFile(file);
}
