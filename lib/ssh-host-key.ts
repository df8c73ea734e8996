import { chmod, link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';
import { sshFingerprint } from './ssh-fingerprint.js';

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
  // A key an earlier version wrote unreadable (see generateHostKey) never served: it is replaced.
  if (existing && parses(existing)) return existing;
  await mkdir(dataDir, { recursive: true });
  const { privateKey, publicKey } = generateHostKey();
  // Written whole aside, then linked (or, to replace, renamed) into place: two processes starting at
  // once agree on one key, and neither ever reads half a file.
  const aside = `${file}.${process.pid}.tmp`;
  await writeFile(aside, privateKey, { mode: 0o600 });
  try {
    if (existing) await rename(aside, file);
    else await link(aside, file);
    await chmod(file, 0o600);
    await writeFile(`${file}.pub`, publicKey + '\n', { mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await rm(aside, { force: true });
  }
  return readFile(file);
}

const parses = (key: Buffer | string) => !(utils.parseKey(key) instanceof Error);

/**
 * ssh2's generator writes an ed25519 public key that starts with a zero byte one byte short, and then
 * cannot read its own file ("Malformed OpenSSH private key"): about 4 keys in 1000 here. Such a key is
 * drawn again.
 */
function generateHostKey(): { privateKey: string; publicKey: string } {
  for (;;) {
    const { private: privateKey, public: publicKey } = utils.generateKeyPairSync('ed25519', { comment: 'essh portal' });
    if (parses(privateKey) && parses(publicKey)) return { privateKey, publicKey };
  }
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
    fingerprint: sshFingerprint(blob),
  };
}
