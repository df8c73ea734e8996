import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { SecretBox } from './secrets.js';
import { SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';

/**
 * Proof that whoever registers an SSH key holds its private key: the API issues a challenge bound to
 * the user and the key, and the key's holder signs it with `ssh-keygen -Y sign -n
 * essh-key-registration`. The challenge is stateless: its fields and an HMAC of them under the
 * secrets key (lib/secrets.ts), so that no table holds challenges and every API process sharing
 * ESSH_SECRETS_KEY accepts the challenges of the others.
 *
 * This module is also the CLI's (no server imports): `essh keys add` signs only a text that is a
 * challenge, and only in this namespace, so that an API cannot have it sign anything else.
 */

/** Long enough for a passphrase prompt or a touch of a security key, short enough to be single-purpose. */
export const SSH_KEY_CHALLENGE_TTL_S = 300;

const CHALLENGE = /^essh-key-registration v1 user=(\d{1,15}) key=(SHA256:[A-Za-z0-9+/]{43}) expires=(\d{1,12}) nonce=([A-Za-z0-9_-]{16}) mac=([A-Za-z0-9_-]{43})$/;

export interface KeyChallenge {
  userId: number;
  fingerprint: string;
  expiresAt: Date;
}

const macInput = (userId: number, fingerprint: string, expires: number, nonce: string) =>
  `ssh-key-challenge ${userId} ${fingerprint} ${expires} ${nonce}`;

export function issueKeyChallenge(secrets: SecretBox, userId: number, fingerprint: string, nowMs = Date.now()) {
  const expires = Math.floor(nowMs / 1000) + SSH_KEY_CHALLENGE_TTL_S;
  const nonce = randomBytes(12).toString('base64url');
  const mac = secrets.derive(macInput(userId, fingerprint, expires, nonce))[0]!;
  return {
    challenge: `essh-key-registration v1 user=${userId} key=${fingerprint} expires=${expires} nonce=${nonce} mac=${mac}`,
    expires_at: new Date(expires * 1000).toISOString(),
  };
}

/** The fields of a challenge, or undefined when the text is not one (the CLI signs nothing else). */
export function readKeyChallenge(text: string): KeyChallenge | undefined {
  const m = CHALLENGE.exec(text);
  return m ? { userId: Number(m[1]), fingerprint: m[2]!, expiresAt: new Date(Number(m[3]) * 1000) } : undefined;
}

/** What is wrong with `text` as the challenge for this user and key, as a sentence; undefined when it holds. */
export function keyChallengeProblem(secrets: SecretBox, text: string, userId: number, fingerprint: string, nowMs = Date.now()): string | undefined {
  const m = CHALLENGE.exec(text);
  if (!m) return 'The challenge is not one this API issues; pass the "challenge" of POST /users/{id}/ssh_key_challenges as it was given.';
  const [, user, key, expires, nonce, mac] = m;
  const given = Buffer.from(mac!);
  const genuine = secrets.derive(macInput(Number(user), key!, Number(expires), nonce!))
    .some((expected) => timingSafeEqual(Buffer.from(expected), given));
  if (!genuine) return 'The challenge was not issued by this essh installation, or was altered; ask for a new one (POST /users/{id}/ssh_key_challenges).';
  if (Number(user) !== userId) return `The challenge was issued for user ${user}, not user ${userId}; ask for one for user ${userId}.`;
  if (key !== fingerprint) return `The challenge was issued for key ${key}, not for this public_key (${fingerprint}); ask for one with this key.`;
  if (Number(expires) * 1000 <= nowMs) {
    return `The challenge expired at ${new Date(Number(expires) * 1000).toISOString()} (challenges last ${SSH_KEY_CHALLENGE_TTL_S / 60} minutes); ask for a new one and sign it.`;
  }
  return undefined;
}
