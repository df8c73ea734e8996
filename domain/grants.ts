import type { Db } from '../lib/db.js';

/**
 * What an operator granted an account (CONTRACT §3): the stacks its apps may use (every shared stack,
 * unless the account has a list of its own; a dedicated stack only where it is granted) and the image
 * repositories they may run. Checked when an app is created or changed, when a session is created, and
 * again on the host before a container is made, so that a grant taken back takes effect at once.
 */

/**
 * Whether `image` lies under one of `prefixes`: `essh/demo` allows `essh/demo`, `essh/demo:1` and
 * `essh/demo@sha256:…` but not `essh/demo-evil`; a prefix ending in `/` allows everything under it.
 */
export function imageAllowed(image: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => {
    if (!image.startsWith(p)) return false;
    if (p.endsWith('/') || image.length === p.length) return true;
    return [':', '@', '/'].includes(image[p.length]!);
  });
}

export function parsePrefixes(stored: string | null): string[] {
  return stored ? (JSON.parse(stored) as string[]) : [];
}

/** The stack ids the account's apps may use. */
export async function usableStackIds(db: Db, accountId: number): Promise<Set<number>> {
  const granted = await db.selectFrom('account_stacks').select('stack_id').where('account_id', '=', accountId).execute();
  if (granted.length) return new Set(granted.map((g) => Number(g.stack_id)));
  const shared = await db.selectFrom('stacks').select('id').where('dedicated', '=', 0).execute();
  return new Set(shared.map((s) => Number(s.id)));
}

/** Why the account may not run `image` on the stack, in a sentence that says what to do; null if it may. */
export async function grantProblem(
  db: Db, account: { id: number; handle: string; image_prefixes: string | null }, stack: { id: number; name: string }, image: string,
): Promise<string | null> {
  if (!(await usableStackIds(db, Number(account.id))).has(Number(stack.id))) {
    return `account ${account.handle} may not use stack ${stack.name}: an operator grants stacks (PATCH /accounts/${account.handle} {"stacks": […]})`;
  }
  const prefixes = parsePrefixes(account.image_prefixes);
  if (!imageAllowed(image, prefixes)) {
    return `account ${account.handle} may not run image ${image}: it may run images under ${prefixes.length ? prefixes.join(', ') : 'no prefix yet'}; an operator grants more (PATCH /accounts/${account.handle} {"image_prefixes": […]})`;
  }
  return null;
}

/** The repository part of an image reference: `essh/demo:latest` → `essh/demo`, `r.io:5000/a/b@sha256:…` → `r.io:5000/a/b`. */
export function imageRepository(image: string): string {
  const noDigest = image.split('@')[0]!;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}
