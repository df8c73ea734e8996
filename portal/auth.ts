import { createHash, timingSafeEqual } from 'node:crypto';
import ssh2, { type AuthContext, type PublicKeyAuthContext } from 'ssh2';

// ssh2 is CommonJS: Node's ESM loader only offers its default export (vitest hides this).
const { utils } = ssh2;
import type { Db } from '../lib/db.js';
import type { SessionsService } from '../services/sessions.js';

/** Who a portal connection is, once authenticated. */
export type PortalIdentity =
  /** `session-<id>`: attach to an existing session (its token, or its owner's key). */
  | { kind: 'session'; sessionId: number }
  /** `<app>`: a registered user's key; a new session is created for the app on the first channel. */
  | { kind: 'app'; app: string; userId: number };

export const SESSION_USER = /^session-(\d{1,15})$/;
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
    if (ctx.method !== 'publickey') return null;
    const userId = await this.keyOwner(ctx);
    return userId === undefined ? null : { kind: 'app', app: ctx.username, userId };
  }

  methodsFor(username: string): ('publickey' | 'password' | 'keyboard-interactive')[] {
    return SESSION_USER.test(username) ? [...SESSION_METHODS] : [...APP_METHODS];
  }

  private async sessionLogin(ctx: AuthContext, sessionId: number): Promise<PortalIdentity | null> {
    const open = async () => {
      const row = await this.deps.db.selectFrom('operations').select(['user_id', 'state']).where('id', '=', sessionId).executeTakeFirst();
      return row && row.state !== 'ending' && row.state !== 'ended' ? row : undefined;
    };
    switch (ctx.method) {
      case 'password':
        return (await this.redeem(sessionId, ctx.password)) && (await open()) ? { kind: 'session', sessionId } : null;
      case 'keyboard-interactive': {
        const answers = await new Promise<string[]>((resolve) => ctx.prompt([{ prompt: 'Password (the session token): ', echo: false }], resolve));
        return (await this.redeem(sessionId, answers[0] ?? '')) && (await open()) ? { kind: 'session', sessionId } : null;
      }
      case 'publickey': {
        const row = await open();
        if (!row) return null;
        const userId = await this.keyOwner(ctx);
        return userId !== undefined && userId === Number(row.user_id) ? { kind: 'session', sessionId } : null;
      }
      default:
        return null;
    }
  }

  private redeem(sessionId: number, token: string): Promise<boolean> {
    if (!token || token.length > 200) return Promise.resolve(false);
    return this.deps.sessions.redeemSessionToken(sessionId, token);
  }

  /**
   * The registered owner of the offered key. Without a signature the client only asks whether the key
   * would do (the answer lets it go on to sign); with one, the signature must verify, as the ssh2
   * documentation shows.
   */
  private async keyOwner(ctx: AuthContext): Promise<number | undefined> {
    if (ctx.method !== 'publickey') return undefined;
    const fingerprint = 'SHA256:' + createHash('sha256').update(ctx.key.data).digest('base64').replace(/=+$/, '');
    const row = await this.deps.db.selectFrom('ssh_keys').select(['user_id', 'public_key']).where('fingerprint', '=', fingerprint).executeTakeFirst();
    if (!row) return undefined;
    return verifies(ctx, row.public_key) ? Number(row.user_id) : undefined;
  }
}

function verifies(ctx: PublicKeyAuthContext, registeredLine: string): boolean {
  const key = utils.parseKey(registeredLine);
  if (key instanceof Error || Array.isArray(key)) return false;
  const registered = key.getPublicSSH();
  if (registered.length !== ctx.key.data.length || !timingSafeEqual(registered, ctx.key.data)) return false;
  if (!ctx.signature || !ctx.blob) return true;
  return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true;
}
