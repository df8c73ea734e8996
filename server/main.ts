// essh's server: the roles of a deployment, each a service of its own (deploy/*.service) or all in one
// process for one machine. `essh-server --role api,worker,host` (or ESSH_ROLES); `npm start` remains
// the embedded stack for a checkout (dev server, demo seed), which no role starts.
import { Command, CommanderError } from 'commander';
import { parseRoles, type Role } from './roles.js';

const NAME = 'essh server';
const program = new Command('essh-server')
  .description('Run essh\'s roles: api (REST API, stateless), worker (workflows and record activities), host (one per Docker host), or all')
  .option('--role <roles>', 'comma-separated roles: api, worker, host, all (default: ESSH_ROLES)')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(`${NAME}: ${s}`) });

/** A bad role or configuration: one line, exit 2 (as `npm start` does for a bad configuration). */
const usageError = (err: unknown): never => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  process.stderr.write(`${NAME}: ${(err as Error).message}\n`);
  process.exit(2);
};

let roles: Role[] = [];
try {
  program.parse();
  const { role } = program.opts<{ role?: string }>();
  roles = parseRoles(role ?? process.env.ESSH_ROLES, role !== undefined ? '--role' : 'ESSH_ROLES (or --role)');
} catch (err) {
  usageError(err);
}
// The rest of essh only once the roles are known good (the build keeps it in a chunk of its own).
const [{ loadConfig }, { serveRoles }] = await Promise.all([import('../lib/config.js'), import('./serve.js')]);
let config;
try {
  config = loadConfig();
} catch (err) {
  usageError(err);
}
await serveRoles(NAME, roles, config!);
