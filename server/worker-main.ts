// A standalone worker process, by its older names: ESSH_WORKER_ROLES=main,host is server/main.ts's
// `--role worker,host`. Used to scale out (one per Docker host) and by the tests that kill a worker
// mid-session.
import { loadConfig } from '../lib/config.js';
import { parseRoles, RoleError } from './roles.js';
import { serveRoles } from './serve.js';

const NAME = 'essh worker';
try {
  const config = loadConfig();
  const names = (process.env.ESSH_WORKER_ROLES ?? 'main,host').split(',').map((r) => (r.trim() === 'main' ? 'worker' : r.trim()));
  await serveRoles(NAME, parseRoles(names.join(','), 'ESSH_WORKER_ROLES'), config);
} catch (err) {
  process.stderr.write(`${NAME}: ${(err as Error).message}\n`);
  process.exit(err instanceof RoleError ? 2 : 1);
}
