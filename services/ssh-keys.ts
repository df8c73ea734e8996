import type { Db } from '../lib/db.js';
import { nowIso } from '../lib/db.js';
import { CAPS, insertWithinCap } from '../domain/caps.js';
import type { SecretBox } from '../lib/secrets.js';
import { issueKeyChallenge, keyChallengeProblem } from '../lib/ssh-key-challenge.js';
import { sshFingerprint } from '../lib/ssh-fingerprint.js';
import { SshSigError, parseSshSignature, sshPublicKey, verifySshSignature } from '../lib/sshsig.js';
import { SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';
import type { AddSshKeyBody } from '../shapes/requests.js';
import { accountIdsOfUser, recordAudit } from './audit.js';
import type { Principal } from './auth.js';
import { conflict, invalid, isUniqueViolation, notFound } from './errors.js';
import { pageOf, type PageRequest } from './pages.js';
import { requireManagedUser } from './user-managers.js';

/** A user's SSH keys: registered only with proof of the private key, listed and removed by whoever may manage the user. */
export class SshKeysService {
  constructor(private readonly db: Db, private readonly secrets: SecretBox) {}

  /** A challenge whose signature by the key proves its holder asks for it to be `userId`'s (lib/ssh-key-challenge.ts). */
  async challenge(p: Principal, userId: number, publicKey: string) {
    await requireManagedUser(this.db, p, userId);
    const parsed = parseAuthorizedKey(publicKey);
    return {
      ...issueKeyChallenge(this.secrets, userId, parsed.fingerprint),
      namespace: SSH_KEY_NAMESPACE, fingerprint: parsed.fingerprint,
    };
  }
  /**
   * Registers a key only with proof that the caller holds its private key: without it, anyone could
   * register a colleague's published key and be the owner of the sessions the colleague opens with it.
   * Whether the key is registered already is said only after the proof, so that the API does not tell
   * a stranger whose public keys essh knows.
   */
  async add(p: Principal, userId: number, input: AddSshKeyBody) {
    await requireManagedUser(this.db, p, userId);
    const parsed = parseAuthorizedKey(input.public_key);
    checkKeyProof(this.secrets, userId, parsed, input.challenge, input.signature);
    const cap = CAPS.sshKeysPerUser;
    try {
      const row = await insertWithinCap(this.db, { table: 'users', id: userId }, cap,
        async (trx) => Number((await trx.selectFrom('ssh_keys').select((eb) => eb.fn.countAll<number>().as('n'))
          .where('user_id', '=', userId).executeTakeFirstOrThrow()).n),
        () => conflict(`This user already has ${cap} SSH keys, the most a user may have; remove one it no longer uses (DELETE /users/${userId}/ssh_keys/{id}).`),
        async (trx) => {
          const row = await trx.insertInto('ssh_keys')
            .values({ user_id: userId, public_key: parsed.line, fingerprint: parsed.fingerprint, created_at: nowIso() })
            .returningAll().executeTakeFirstOrThrow();
          await recordAudit(trx, p, {
            action: 'ssh_key.added', target: { id: row.id, name: parsed.fingerprint }, accountIds: await accountIdsOfUser(trx, userId),
            fields: ['public_key'], details: { user_id: userId, type: parsed.type, fingerprint: parsed.fingerprint },
          });
          return row;
        });
      return { id: Number(row.id), fingerprint: row.fingerprint, public_key: row.public_key, created_at: row.created_at };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`This key (${parsed.fingerprint}) is already registered.`);
      throw err;
    }
  }
  async delete(p: Principal, userId: number, keyId: number) {
    await requireManagedUser(this.db, p, userId);
    await this.db.transaction().execute(async (trx) => {
      const key = await trx.deleteFrom('ssh_keys').where('id', '=', keyId).where('user_id', '=', userId).returning('fingerprint').executeTakeFirst();
      if (!key) throw notFound(`SSH key ${keyId}`);
      await recordAudit(trx, p, {
        action: 'ssh_key.removed', target: { id: keyId, name: key.fingerprint }, accountIds: await accountIdsOfUser(trx, userId),
        fields: ['public_key'], details: { user_id: userId, fingerprint: key.fingerprint },
      });
    });
  }
  async list(p: Principal, userId: number, page: PageRequest) {
    await requireManagedUser(this.db, p, userId);
    let q = this.db.selectFrom('ssh_keys').selectAll().where('user_id', '=', userId).orderBy('id').limit(page.limit + 1);
    if (page.after !== undefined) q = q.where('id', '>', page.after);
    return pageOf(await q.execute(), page, (r) => Number(r.id),
      (r) => ({ id: Number(r.id), fingerprint: r.fingerprint, public_key: r.public_key, created_at: r.created_at }));
  }
}

const KEY_TYPES = new Set([
  'ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com',
]);

const SIGN_HOW = `Sign the challenge with the key: printf %s "$CHALLENGE" | ssh-keygen -Y sign -n ${SSH_KEY_NAMESPACE} -f ~/.ssh/id_ed25519, ` +
  'and pass its output as "signature"; or let the CLI do it all: essh keys add ~/.ssh/id_ed25519.';

/** Refuses, saying why, unless `signature` is the key's SSHSIG over a genuine, current challenge for this user and key. */
function checkKeyProof(secrets: SecretBox, userId: number, key: ReturnType<typeof parseAuthorizedKey>, challenge: string, signature: string) {
  const problem = keyChallengeProblem(secrets, challenge, userId, key.fingerprint);
  if (problem) throw invalid(problem, { problems: [`body.challenge: ${problem}`] });
  const refuse = (why: string) => {
    const message = `The signature is no proof that you hold this key's private key: ${why}. ${SIGN_HOW}`;
    return invalid(message, { problems: [`body.signature: ${why}`] });
  };
  let sig;
  try {
    sig = parseSshSignature(signature);
  } catch (err) {
    if (err instanceof SshSigError) throw refuse(err.message);
    throw err;
  }
  if (!sig.publicKey.equals(key.blob)) {
    throw refuse(`it was made by another key (${sshFingerprint(sig.publicKey)}), not by the key in public_key (${key.fingerprint})`);
  }
  if (sig.namespace !== SSH_KEY_NAMESPACE) throw refuse(`it was made for the namespace "${sig.namespace}", not "${SSH_KEY_NAMESPACE}" (ssh-keygen's -n)`);
  // `jq -r .challenge | ssh-keygen -Y sign` signs the line with its newline: that is the same challenge.
  const text = Buffer.from(challenge, 'utf8');
  if (!verifySshSignature(sig, text, key.line) && !verifySshSignature(sig, Buffer.concat([text, Buffer.from('\n')]), key.line)) {
    throw refuse('it does not verify over the challenge (was another text signed?)');
  }
}

/** Accepts one OpenSSH public key line ("type base64 [comment]"); the fingerprint is OpenSSH's SHA256 form. */
export function parseAuthorizedKey(text: string): { line: string; fingerprint: string; type: string; blob: Buffer } {
  const parts = text.trim().split(/\s+/);
  const [type, b64] = parts;
  const help = 'Paste one OpenSSH public key line, e.g. the contents of ~/.ssh/id_ed25519.pub.';
  if (!type || !b64 || !KEY_TYPES.has(type)) throw invalid(`Not an OpenSSH public key (unknown key type "${type ?? ''}"). ${help}`);
  const blob = Buffer.from(b64, 'base64');
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (len <= 0 || blob.subarray(4, 4 + len).toString('latin1') !== type) {
    throw invalid(`The key data does not match its type ${type}. ${help}`);
  }
  if (type.startsWith('sk-')) {
    throw invalid(`Security-key (${type}) keys cannot sign in to the portal: its SSH library (ssh2) does not verify them. Register an ed25519, ECDSA or RSA key.`);
  }
  const key = sshPublicKey(`${type} ${b64}`);
  if (key instanceof Error) throw invalid(`The key data of this ${type} key cannot be read (${key.message}). ${help}`);
  return { line: parts.slice(0, 3).join(' '), fingerprint: sshFingerprint(blob), type, blob };
}
