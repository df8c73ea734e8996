import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** API and session tokens: 32 random bytes, stored only as SHA-256 (they are high-entropy, so no KDF). */
export function newToken(prefix: 'essh' | 'esst'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

const SEALED_PREFIX = 'v1.';

/**
 * Secrets essh must be able to read back (a drain's token and URL, which may carry a password) are
 * kept in the database sealed with AES-256-GCM under a key that is not in the database: a copy of the
 * database alone (a backup, a dump) gives none of them away.
 */
export class SecretBox {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error(`the secrets key must be 32 bytes, not ${key.length}`);
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return SEALED_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64');
  }

  isSealed(stored: string): boolean {
    return stored.startsWith(SEALED_PREFIX);
  }

  /** A value written before sealing existed is returned as it is. */
  open(stored: string): string {
    if (!this.isSealed(stored)) return stored;
    const raw = Buffer.from(stored.slice(SEALED_PREFIX.length), 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    try {
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    } catch {
      throw new Error('a stored secret cannot be opened with this secrets key (ESSH_SECRETS_KEY or <data dir>/secrets.key differs from the one that sealed it)');
    }
  }
}

/**
 * ESSH_SECRETS_KEY (base64 of 32 bytes) when set, which every process of a split deployment must share;
 * else a key made once under the data dir (0600), like the portal's host key.
 */
export async function loadSecretBox(opts: { dataDir: string; keyBase64?: string }): Promise<SecretBox> {
  if (opts.keyBase64) {
    const key = Buffer.from(opts.keyBase64, 'base64');
    if (key.length !== 32) throw new Error(`ESSH_SECRETS_KEY must be 32 bytes in base64 (openssl rand -base64 32); it decodes to ${key.length}`);
    return new SecretBox(key);
  }
  const file = path.join(opts.dataDir, 'secrets.key');
  await mkdir(opts.dataDir, { recursive: true });
  try {
    await writeFile(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const key = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
  if (key.length !== 32) throw new Error(`${file} does not hold 32 bytes in base64; restore it, or remove it only if no drain was stored with it`);
  return new SecretBox(key);
}
