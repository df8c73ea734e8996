import { timingSafeEqual } from 'node:crypto';
import ssh2, { type AuthContext, type PublicKeyAuthContext } from 'ssh2';

// ssh2 is CommonJS: Node's ESM loader only offers its default export (vitest hides this).
const { utils } = ssh2;
import { sql } from 'kysely';
import { nowIso, type Db } from '../lib/db.js';
import { sshFingerprint } from '../lib/ssh-fingerprint.js';
import type { SessionsService } from '../services/sessions.js';

/** What a connection logged in with, checked again before each new channel (`stillValid`). */
export type PortalCredential = { kind: 'key'; fingerprint: string } | { kind: 'token'; tokenId: number };

/** Who a portal connection is, once authenticated; `userId` is the user it counts against (the session's owner for a token). */
export type PortalIdentity = { userId: number; credential: PortalCredential } & (
  /** `session-<id>`: attach to an existing session (its token, or its owner's key). */
  | { kind: 'session'; sessionId: number }
  /** `<app>`: a registered user's key; a new session is created for the app on the first channel. */
  | { kind: 'app'; app: string }
  /**
   * `watch-<id>`: follow a live session's output read-only (portal/observers.ts), with a registered key
   * or a watch token; `userId` is the observer, whose right to watch is checked per channel.
   */
  | { kind: 'watch'; sessionId: number }
);

export const SESSION_USER = /^session-(\d{1,15})$/;
export const WATCH_USER = /^watch-(\d{1,15})$/;
const SESSION_METHODS = ['publickey', 'password', 'keyboard-interactive'] as const;
const APP_METHODS = ['publickey'] as const;

/**
 * Decides one authentication attempt. Every refusal looks the same to the client (wrong token, unknown
 * session, someone else's key or session, an ended session): nothing tells it which one it was.
 */
export class PortalAuthenticator {
  constructor(private readonly deps: { db: Db; sessions: SessionsService }) {}

  async decide(ctx: AuthContext): Promise<PortalIdentity | null> {
    const m = SESSION_USER.exec(ctx.username);
    if (m) return this.sessionLogin(ctx, Number(m[1]));
    const w = WATCH_USER.exec(ctx.username);
    if (w) return this.watchLogin(ctx, Number(w[1]));
    if (ctx.method !== 'publickey') return null;
    const owner = await this.keyOwner(ctx);
    return owner ? { kind: 'app', app: ctx.username, userId: owner.userId, credential: { kind: 'key', fingerprint: owner.fingerprint } } : null;
  }

  /**
   * The answer to a key offered without a signature: yes for any well-formed key, whoever owns it and
   * whatever the user name, so that the offer tells nothing (OpenSSH's client needs the yes to go on
   * and sign); only the signed attempt is decided.
   */
  wouldConsider(ctx: PublicKeyAuthContext): boolean {
    const key = utils.parseKey(`${ctx.key.algo} ${ctx.key.data.toString('base64')}`);
    return !(key instanceof Error) && !Array.isArray(key);
  }

  /**
   * Whether what `who` logged in with still stands: its key still registered to its user, its token
   * neither expired nor revoked. A refusal is the line the client is told; null: it stands.
   */
  async stillValid(who: PortalIdentity): Promise<string | null> {
    const { db } = this.deps;
    if (!(await db.selectFrom('users').select('id').where('id', '=', who.userId).executeTakeFirst())) {
      return 'essh: the user this connection logged in as no longer exists; this connection opens no new sessions.';
    }
    if (who.credential.kind === 'key') {
      const key = await db.selectFrom('ssh_keys').select('id')
        .where('fingerprint', '=', who.credential.fingerprint).where('user_id', '=', who.userId).executeTakeFirst();
      return key ? null
        : `essh: the SSH key this connection logged in with (${who.credential.fingerprint}) has been removed; ` +
          'this connection opens no new sessions. Connect again with a registered key (essh keys add FILE).';
    }
    const token = await db.selectFrom('session_tokens').select('id')
      .where('id', '=', who.credential.tokenId).where(sql<boolean>`expires_at > ${nowIso()}`).executeTakeFirst();
    return token ? null
      : 'essh: the session token this connection logged in with has expired or was revoked; this connection opens no ' +
        'new sessions. Attach again with a registered SSH key of the session\'s owner.';
  }

  methodsFor(username: string): ('publickey' | 'password' | 'keyboard-interactive')[] {
    return SESSION_USER.test(username) || WATCH_USER.test(username) ? [...SESSION_METHODS] : [...APP_METHODS];
  }

  private async sessionLogin(ctx: AuthContext, sessionId: number): Promise<PortalIdentity | null> {
    const open = async () => {
      const row = await this.deps.db.selectFrom('operations').select(['user_id', 'state']).where('id', '=', sessionId).executeTakeFirst();
      return row && row.state !== 'ending' && row.state !== 'ended' ? row : undefined;
    };
    const token = await tokenOf(ctx);
    if (token !== null) {
      const redeemed = await this.redeem(sessionId, token, false);
      const row = redeemed ? await open() : undefined;
      return row ? { kind: 'session', sessionId, userId: Number(row.user_id), credential: { kind: 'token', tokenId: redeemed!.tokenId } } : null;
    }
    if (ctx.method !== 'publickey') return null;
    const row = await open();
    if (!row) return null;
    const owner = await this.keyOwner(ctx);
    return owner && owner.userId === Number(row.user_id)
      ? { kind: 'session', sessionId, userId: owner.userId, credential: { kind: 'key', fingerprint: owner.fingerprint } }
      : null;
  }

  /**
   * `watch-<id>`: the observer's registered key, or a watch token the API issued to the observer. Who
   * may watch which session is decided when the channel opens, with a sentence (portal/observers.ts).
   */
  private async watchLogin(ctx: AuthContext, sessionId: number): Promise<PortalIdentity | null> {
    const token = await tokenOf(ctx);
    if (token !== null) {
      const redeemed = await this.redeem(sessionId, token, true);
      return redeemed?.watcherId ? { kind: 'watch', sessionId, userId: redeemed.watcherId, credential: { kind: 'token', tokenId: redeemed.tokenId } } : null;
    }
    const owner = await this.keyOwner(ctx);
    return owner ? { kind: 'watch', sessionId, userId: owner.userId, credential: { kind: 'key', fingerprint: owner.fingerprint } } : null;
  }

  private redeem(sessionId: number, token: string, watch: boolean) {
    if (!token || token.length > 200) return Promise.resolve(null);
    return this.deps.sessions.redeemSessionToken(sessionId, token, { watch });
  }

  /**
   * The registered owner of a signed key: the signature must verify, as the ssh2 documentation shows.
   * A key offered without one never gets here (`wouldConsider` answers it) and is never an owner.
   */
  private async keyOwner(ctx: AuthContext): Promise<{ userId: number; fingerprint: string } | undefined> {
    if (ctx.method !== 'publickey') return undefined;
    const fingerprint = sshFingerprint(ctx.key.data);
    const row = await this.deps.db.selectFrom('ssh_keys').select(['user_id', 'public_key']).where('fingerprint', '=', fingerprint).executeTakeFirst();
    if (!row) return undefined;
    return verifies(ctx, row.public_key) ? { userId: Number(row.user_id), fingerprint } : undefined;
  }
}

/** The token a password or keyboard-interactive attempt carries; null for any other method. */
async function tokenOf(ctx: AuthContext): Promise<string | null> {
  if (ctx.method === 'password') return ctx.password;
  if (ctx.method !== 'keyboard-interactive') return null;
  const answers = await new Promise<string[]>((resolve) => ctx.prompt([{ prompt: 'Password (the session token): ', echo: false }], resolve));
  return answers[0] ?? '';
}

function verifies(ctx: PublicKeyAuthContext, registeredLine: string): boolean {
  const key = utils.parseKey(registeredLine);
  if (key instanceof Error || Array.isArray(key)) return false;
  const registered = key.getPublicSSH();
  if (registered.length !== ctx.key.data.length || !timingSafeEqual(registered, ctx.key.data)) return false;
  if (!ctx.signature || !ctx.blob) return false;
  return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true;
}
