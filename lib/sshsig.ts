import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import ssh2 from 'ssh2';

// ssh2 is CommonJS: Node's ESM loader only offers its default export.
const { utils } = ssh2;

/**
 * OpenSSH signatures (`ssh-keygen -Y sign`), the SSHSIG format of OpenSSH's PROTOCOL.sshsig:
 *
 *   "-----BEGIN SSH SIGNATURE-----", base64 of
 *     byte[6] "SSHSIG", uint32 version (1), string publickey, string namespace, string reserved,
 *     string hash_algorithm ("sha256" | "sha512"), string signature
 *   where the signature is the key's, as in SSH, over
 *     byte[6] "SSHSIG", string namespace, string reserved, string hash_algorithm, string H(message).
 *
 * No npm package parses SSHSIG (sshpk reads plain SSH signatures, not this envelope), and the format
 * is a handful of length-prefixed fields; the cryptography is node:crypto's.
 */

const MAGIC = Buffer.from('SSHSIG');
const ARMOR = /^\s*-----BEGIN SSH SIGNATURE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END SSH SIGNATURE-----\s*$/;
const HASHES = new Set(['sha256', 'sha512']);
const ECDSA_HASH: Record<string, { hash: string; size: number }> = {
  'ecdsa-sha2-nistp256': { hash: 'sha256', size: 32 },
  'ecdsa-sha2-nistp384': { hash: 'sha384', size: 48 },
  'ecdsa-sha2-nistp521': { hash: 'sha512', size: 66 },
};
const RSA_HASH: Record<string, string> = { 'rsa-sha2-256': 'sha256', 'rsa-sha2-512': 'sha512' };

export interface SshSignature {
  /** The signing key, in SSH wire format (what a public key line's base64 holds). */
  publicKey: Buffer;
  namespace: string;
  hashAlgorithm: string;
  /** The key's signature: its format name and bytes, as in SSH. */
  signature: Buffer;
}

/** Why a signature could not be read; its message is meant for the person who made it. */
export class SshSigError extends Error {}

class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  bytes(n: number): Buffer {
    if (this.at + n > this.buf.length) throw new SshSigError('it ends too early');
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  uint32(): number {
    return this.bytes(4).readUInt32BE(0);
  }
  string(): Buffer {
    return this.bytes(this.uint32());
  }
  get done() {
    return this.at === this.buf.length;
  }
}

const sshString = (b: Buffer | string) => {
  const bytes = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
};

/** Reads the armored text `ssh-keygen -Y sign` writes. */
export function parseSshSignature(armored: string): SshSignature {
  const m = ARMOR.exec(armored);
  if (!m) throw new SshSigError('it is not an armored SSH signature ("-----BEGIN SSH SIGNATURE-----" … "-----END SSH SIGNATURE-----")');
  const r = new Reader(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  if (!r.bytes(6).equals(MAGIC)) throw new SshSigError('it does not start with "SSHSIG"');
  const version = r.uint32();
  if (version !== 1) throw new SshSigError(`it is SSHSIG version ${version}; only version 1 is known`);
  const publicKey = r.string();
  const namespace = r.string().toString('utf8');
  r.string(); // reserved
  const hashAlgorithm = r.string().toString('utf8');
  const signature = r.string();
  if (!r.done) throw new SshSigError('it has bytes after its signature');
  if (!HASHES.has(hashAlgorithm)) throw new SshSigError(`its hash algorithm "${hashAlgorithm}" is neither sha256 nor sha512`);
  return { publicKey, namespace, hashAlgorithm, signature };
}

/** The key of an OpenSSH public key line, for node:crypto; an Error saying why when its data is no such key. */
export function sshPublicKey(publicKeyLine: string): KeyObject | Error {
  const key = utils.parseKey(publicKeyLine);
  if (key instanceof Error) return key;
  if (Array.isArray(key)) return new Error('several keys');
  try {
    return createPublicKey(key.getPublicPEM());
  } catch (err) {
    return err as Error;
  }
}

/** An SSH `mpint` as a fixed-width unsigned big-endian integer (the r and s of IEEE P1363). */
function fixedWidth(mpint: Buffer, size: number): Buffer {
  let i = 0;
  while (i < mpint.length - 1 && mpint[i] === 0) i++;
  const digits = mpint.subarray(i);
  if (digits.length > size) throw new SshSigError('its ECDSA signature is too long for its curve');
  return Buffer.concat([Buffer.alloc(size - digits.length), digits]);
}

/**
 * Whether `sig` is a valid signature of `message` in `namespace` by the key of `publicKeyLine`.
 * The caller checks `sig.publicKey` and `sig.namespace` first, to say which one was wrong.
 */
export function verifySshSignature(sig: SshSignature, message: Buffer, publicKeyLine: string): boolean {
  const key = sshPublicKey(publicKeyLine);
  if (key instanceof Error) return false;
  try {
    return verifies(sig, message, key);
  } catch {
    // A signature blob cut short or out of range for its curve: no signature of this message.
    return false;
  }
}

function verifies(sig: SshSignature, message: Buffer, key: KeyObject): boolean {
  const signed = Buffer.concat([
    MAGIC, sshString(sig.namespace), sshString(''), sshString(sig.hashAlgorithm),
    sshString(createHash(sig.hashAlgorithm).update(message).digest()),
  ]);
  const r = new Reader(sig.signature);
  const format = r.string().toString('utf8');
  const bytes = r.string();
  const keyType = new Reader(sig.publicKey).string().toString('utf8');
  if (keyType === 'ssh-ed25519') {
    return format === 'ssh-ed25519' && verify(null, signed, key, bytes);
  }
  const ec = ECDSA_HASH[keyType];
  if (ec) {
    if (format !== keyType) return false;
    const rs = new Reader(bytes);
    const p1363 = Buffer.concat([fixedWidth(rs.string(), ec.size), fixedWidth(rs.string(), ec.size)]);
    return verify(ec.hash, signed, { key, dsaEncoding: 'ieee-p1363' }, p1363);
  }
  // SHA-1 ("ssh-rsa") signatures are refused, as OpenSSH does for SSHSIG.
  if (keyType === 'ssh-rsa') return RSA_HASH[format] !== undefined && verify(RSA_HASH[format], signed, key, bytes);
  return false;
}
