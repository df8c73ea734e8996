import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

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
