import { createHash } from 'node:crypto';
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

/** The portal's public host key as the API announces it, so that clients can check what they reach. */
export interface AnnouncedHostKey {
  /** OpenSSH public key format (`ssh-ed25519 AAAA…`), as in known_hosts. */
  line: string;
  /** As `ssh-keygen -l -E sha256` prints it: `SHA256:` and unpadded base64. */
  fingerprint: string;
}

/** From the private key file, or from a public key line (ESSH_PORTAL_HOST_KEY); throws if neither parses. */
export function announcedHostKey(key: Buffer | string): AnnouncedHostKey {
  const parsed = utils.parseKey(key);
  const one = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!one || one instanceof Error) {
    throw new Error(`not an SSH key (${one instanceof Error ? one.message : 'nothing parsed'}); give the portal's public host key as in its .pub file`);
  }
  const blob = one.getPublicSSH();
  return {
    line: `${one.type} ${blob.toString('base64')}`,
    fingerprint: `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`,
  };
}
