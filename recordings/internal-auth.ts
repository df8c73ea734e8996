// The credential of a request to a host's internal endpoint (recordings/internal-server.ts): made by the
// API's process for one session's recording, valid for a minute, and checked by the host. Its key is
// derived from the secrets key every essh process already holds (lib/secrets.ts `derive`), so nothing
// new is to be distributed; a token caught on the way opens one session's recording for a minute, not
// every recording forever as the permanent bearer before it did.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SecretBox } from '../lib/secrets.js';

const KEY_LABEL = 'essh host internal request key v2';
/** How long a token is good for: it is used at once, this covers clocks a little apart. */
export const INTERNAL_TOKEN_TTL_MS = 60_000;
const TOKEN = /^v2\.(\d{1,15})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/;

function mac(key: string, operationId: number, expiresAtMs: number): string {
  return createHmac('sha256', key).update(`recording\n${operationId}\n${expiresAtMs}`, 'utf8').digest('base64url');
}

/** The bearer of one request for session `operationId`'s recording. */
export function internalRecordingToken(secrets: SecretBox, operationId: number, now = Date.now()): string {
  const expiresAtMs = now + INTERNAL_TOKEN_TTL_MS;
  return `v2.${operationId}.${expiresAtMs}.${mac(secrets.derive(KEY_LABEL)[0]!, operationId, expiresAtMs)}`;
}

/**
 * Why `token` does not open session `operationId`'s recording now, or null when it does. Any key the
 * host holds may have made it (a key rotation in progress); one that would outlive its lifetime was not
 * made by essh and is refused.
 */
export function internalRecordingTokenRefusal(secrets: SecretBox, token: string, operationId: number, now = Date.now()): string | null {
  const m = TOKEN.exec(token);
  if (!m) return 'it is not an internal request token';
  const [, forSession, expires, given] = m;
  const expiresAtMs = Number(expires);
  const givenMac = Buffer.from(given!);
  const genuine = secrets.derive(KEY_LABEL).some((key) => {
    const expected = Buffer.from(mac(key, Number(forSession), expiresAtMs));
    return expected.length === givenMac.length && timingSafeEqual(expected, givenMac);
  });
  if (!genuine) return 'its signature does not match this installation\'s secrets key';
  if (Number(forSession) !== operationId) return `it is for session ${forSession}`;
  if (expiresAtMs <= now) return 'it has expired';
  if (expiresAtMs > now + 2 * INTERNAL_TOKEN_TTL_MS) return 'it claims a longer life than essh gives its tokens';
  return null;
}
