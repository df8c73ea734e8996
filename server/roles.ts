// The roles one essh process can run (issue 19 §1). Nothing else is imported here: a process given a
// bad role says so before it loads the rest of essh (server/serve.ts), which takes seconds.

export const ROLES = ['api', 'worker', 'host'] as const;
export type Role = (typeof ROLES)[number];

/** A role list that names something else: its message is the one line an operator sees. */
export class RoleError extends Error {}

/** `api,worker`, `all`… into the roles they name; throws a RoleError that says what was wrong. */
export function parseRoles(text: string | undefined, from: string): Role[] {
  const names = (text ?? '').split(',').map((r) => r.trim()).filter(Boolean);
  if (!names.length) throw new RoleError(`no role given: name one or more of ${ROLES.join(', ')} (or all) with ${from}`);
  const roles = new Set<Role>();
  for (const name of names) {
    if (name === 'all') ROLES.forEach((r) => roles.add(r));
    else if ((ROLES as readonly string[]).includes(name)) roles.add(name as Role);
    else throw new RoleError(`unknown role "${name}" in ${from}: the roles are ${ROLES.join(', ')} and all, comma-separated (api,worker, say)`);
  }
  return ROLES.filter((r) => roles.has(r));
}

