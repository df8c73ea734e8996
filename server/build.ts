// The production build (`npm run build`, or `npm run build -- OUT`; default dist/): the roles' entry as
// one JavaScript module that plain `node` runs (server.js; the npm packages stay in node_modules,
// which the build's folder must see: it sits in the checkout, or beside a node_modules), the workflow
// bundle prebuilt (workflow-bundle.js: a worker starts without bundling), the web console's files
// (console/), the redaction worker thread's entry, and the idle init of session containers (essh-init) with its
// port-forwarding relay (essh-relay) and OpenSSH's sftp-server folder (essh-sftp/).
// esbuild, as for the CLI (bin/essh.js) and the console: it bundles in about a second, where tsc would
// emit a tree whose imports of `.ts`-less JSON and worker entries need fixing by hand.
import { execFileSync } from 'node:child_process';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import * as esbuild from 'esbuild';
import { writeConsole } from '../console/server.js';
import { projectRoot } from '../lib/config.js';
import { workflowsPath } from '../worker/workers.js';

const out = path.resolve(process.argv[2] ?? path.join(projectRoot, 'dist'));
const started = Date.now();
const step = (what: string) => process.stderr.write(`${what} (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

await esbuild.build({
  absWorkingDir: projectRoot,
  entryPoints: {
    server: 'server/main.ts',
    // redaction/redaction-pool.ts starts it by this name beside the module that imports it (the bundle).
    'redaction-worker-entry': 'redaction/redaction-worker.ts',
  },
  outdir: out,
  bundle: true,
  // server.js loads the rest of essh (a chunk) only once its roles are known good: a bad one is said at
  // once. The chunks sit beside server.js: what the modules find by import.meta.url (the workflow
  // bundle, the console's files, the redaction worker's entry) is looked for there.
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The packages (native ones among them: better-sqlite3, ssh2, Temporal's core) load from node_modules.
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
});
// The worker thread's entry is loaded as .mjs (the sources' plain-JavaScript entry has that name).
await rename(path.join(out, 'redaction-worker-entry.js'), path.join(out, 'redaction-worker-entry.mjs'));
await rename(path.join(out, 'redaction-worker-entry.js.map'), path.join(out, 'redaction-worker-entry.mjs.map'));
step('server.js');

const noop = () => undefined;
const bundle = await bundleWorkflowCode({ workflowsPath, logger: { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: console.error } });
await writeFile(path.join(out, 'workflow-bundle.js'), bundle.code);
step('workflow-bundle.js');

await writeConsole(path.join(out, 'console'));
step('console/');

// Static, so that any image can run them (as scripts/setup.sh builds them into .tools for a checkout);
// the relay is found beside the init (lib/config.ts relayPath). The linker's warning that a static
// getaddrinfo needs glibc's NSS libraries is off: files and DNS are in glibc 2.34+ itself.
for (const program of ['essh-init', 'essh-relay']) {
  execFileSync('gcc', ['-static', '-Os', '-s', '-Wl,--no-warnings', '-o', path.join(out, program), path.join(projectRoot, `host/init/${program}.c`)], { stdio: 'inherit' });
  step(program);
}
execFileSync('bash', [path.join(projectRoot, 'scripts/sftp-server-folder.sh'), path.join(out, 'essh-sftp')], { stdio: 'inherit' });
step('essh-sftp/');
process.stderr.write(`built into ${out}: start the roles with \`node ${path.join(out, 'server.js')} --role all\` (or api, worker, host)\n`);
