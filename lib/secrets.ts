import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
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

/** Sealed before keys had ids: the key that sealed it is found by trying each. */
const SEALED_V1 = 'v1.';
/** `v2.<key id>.<iv | tag | ciphertext, base64>`: the key id names the key that sealed it. */
const SEALED_V2 = 'v2.';

/** A key's id: the start of its SHA-256, enough to tell keys apart and say which one is missing. */
export function secretsKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/**
 * Secrets essh must be able to read back (a drain's token and URL, which may carry a password) are
 * kept in the database sealed with AES-256-GCM under a key that is not in the database: a copy of the
 * database alone (a backup, a dump) gives none of them away.
 *
 * Keys rotate: values are sealed with the current key, and opened with whichever key sealed them, the
 * current one or one of the previous keys; `needsResealing` tells which stored values to seal again
 * under the current key, after which the previous keys can go.
 */
export class SecretBox {
  private readonly keys = new Map<string, Buffer>();
  readonly keyId: string;

  constructor(key: Buffer, previousKeys: Buffer[] = []) {
    for (const k of [key, ...previousKeys]) {
      if (k.length !== 32) throw new Error(`a secrets key must be 32 bytes, not ${k.length}`);
      this.keys.set(secretsKeyId(k), k);
    }
    this.keyId = secretsKeyId(key);
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.keyId)!, iv);
    const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return `${SEALED_V2}${this.keyId}.${Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64')}`;
  }

  isSealed(stored: string): boolean {
    return stored.startsWith(SEALED_V1) || stored.startsWith(SEALED_V2);
  }

  /** Stored in clear (written before sealing existed), or sealed under a key other than the current one. */
  needsResealing(stored: string): boolean {
    return !stored.startsWith(`${SEALED_V2}${this.keyId}.`);
  }

  /**
   * Values every process holding the same key derives alike, without sending the key anywhere: an
   * HMAC-SHA256 of `label` under each key, the current key's first (a rotation in progress may have
   * the other side still on a previous key).
   */
  derive(label: string): string[] {
    const current = this.keys.get(this.keyId)!;
    return [current, ...[...this.keys.values()].filter((k) => k !== current)]
      .map((k) => createHmac('sha256', k).update(label, 'utf8').digest('base64url'));
  }

  /** A value written before sealing existed is returned as it is. */
  open(stored: string): string {
    if (stored.startsWith(SEALED_V2)) {
      const dot = stored.indexOf('.', SEALED_V2.length);
      const keyId = stored.slice(SEALED_V2.length, dot);
      const key = this.keys.get(keyId);
      if (!key) {
        throw new Error(
          `a stored secret was sealed with secrets key ${keyId}, which is neither the current key (${this.keyId}) ` +
            'nor one in ESSH_SECRETS_KEY_PREVIOUS; add the key that sealed it to ESSH_SECRETS_KEY_PREVIOUS',
        );
      }
      const opened = tryOpen(key, stored.slice(dot + 1));
      if (opened === null) throw new Error(`a stored secret sealed with secrets key ${keyId} does not open: it was altered`);
      return opened;
    }
    if (!stored.startsWith(SEALED_V1)) return stored;
    for (const key of this.keys.values()) {
      const opened = tryOpen(key, stored.slice(SEALED_V1.length));
      if (opened !== null) return opened;
    }
    throw new Error(
      'a stored secret cannot be opened with the current secrets key nor any in ESSH_SECRETS_KEY_PREVIOUS ' +
        '(ESSH_SECRETS_KEY or <data dir>/secrets.key differs from the one that sealed it); add that key to ESSH_SECRETS_KEY_PREVIOUS',
    );
  }
}

/** The plain text, or null when `key` is not the one that sealed it (GCM's tag does not match). */
function tryOpen(key: Buffer, sealedBase64: string): string | null {
  const raw = Buffer.from(sealedBase64, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  decipher.setAuthTag(raw.subarray(12, 28));
  try {
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
  } catch {
    return null;
  }
}

function decodeKey(base64: string, what: string): Buffer {
  const key = Buffer.from(base64.trim(), 'base64');
  if (key.length !== 32) throw new Error(`${what} must be 32 bytes in base64 (openssl rand -base64 32); it decodes to ${key.length}`);
  return key;
}

/**
 * ESSH_SECRETS_KEY (base64 of 32 bytes) when set, which every process of a split deployment must share;
 * else a key made once under the data dir (0600), like the portal's host key. ESSH_SECRETS_KEY_PREVIOUS
 * (comma-separated) holds keys being rotated out: values they sealed still open.
 */
export async function loadSecretBox(opts: { dataDir: string; keyBase64?: string; previousKeysBase64?: string }): Promise<SecretBox> {
  const previous = (opts.previousKeysBase64 ?? '').split(',').map((k) => k.trim()).filter(Boolean)
    .map((k, i) => decodeKey(k, `key ${i + 1} of ESSH_SECRETS_KEY_PREVIOUS`));
  if (opts.keyBase64) return new SecretBox(decodeKey(opts.keyBase64, 'ESSH_SECRETS_KEY'), previous);
  const file = path.join(opts.dataDir, 'secrets.key');
  await mkdir(opts.dataDir, { recursive: true });
  try {
    await writeFile(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const key = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
  if (key.length !== 32) throw new Error(`${file} does not hold 32 bytes in base64; restore it, or remove it only if no drain was stored with it`);
  return new SecretBox(key, previous);
}
