// `npm start`: the whole embedded stack in one process tree (CONTRACT §2).
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, type Config } from '../lib/config.js';
import { createLogger } from '../lib/log.js';
import { seedDemo } from './seed.js';
import { startDevServer, type DevServer } from './temporal-dev.js';
import { startRuntime, type Runtime } from './runtime.js';

async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`essh: ${(err as Error).message}`);
    process.exit(2);
  }
  // Everything essh and the dev server write under the data dir is its user's alone (see runtime.ts).
  process.umask(0o077);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const log = createLogger(config.logLevel);

  let dev: DevServer | undefined;
  let runtime: Runtime | undefined;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`\nessh: ${signal} received, stopping (live sessions carry on when started again)…`);
    await runtime?.stop();
    await dev?.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  try {
    if (!config.temporal.address) {
      dev = await startDevServer({
        binary: config.temporal.binary, dataDir: config.dataDir, port: config.temporal.devPort,
        uiPort: config.temporal.uiPort, namespace: config.temporal.namespace,
      });
      config.temporal.address = dev.address;
    }
    runtime = await startRuntime(config, { api: true, worker: true, hostStacks: config.hostStacks, portal: true, searchAttributes: true }, log);
    const { seeded } = await seedDemo(runtime.db, config.dataDir, runtime.secrets, config.adminToken);
    const shown = (file: string) => {
      const rel = path.relative(process.cwd(), file);
      return rel.startsWith('..') ? file : rel;
    };
    const tokenFile = shown(path.join(config.dataDir, 'demo-token'));
    const lines = [
      '',
      `essh is up${seeded ? ' (seeded the demo account, app and users)' : ''}`,
      `  REST API      ${runtime.apiUrl}   (OpenAPI: ${runtime.apiUrl}/openapi.json)`,
      `  Web console   ${runtime.apiUrl}/console   (sign in with a token below)`,
      `  SSH portal    ${config.ssh.host}:${runtime.sshPort}   (ssh -t -p ${runtime.sshPort} session-<id>@${config.ssh.publicHost}, or <app>@ with a registered key)`,
      `  Temporal      ${config.temporal.address}, namespace ${config.temporal.namespace}`,
      dev ? `  Temporal UI   ${dev.uiUrl}` : undefined,
      `  Metrics       ${runtime.metricsUrl}${config.metrics.token ? '   (bearer: ESSH_METRICS_TOKEN)' : ''}   (Prometheus: deploy/prometheus/)`,
      `  Data dir      ${config.dataDir}`,
      `  Tokens        ${tokenFile} (demo user), ${shown(path.join(config.dataDir, 'admin-token'))} (operator)`,
      '',
      'Next: start a session on the demo app:',
      `  curl -s -X POST -H "Authorization: Bearer $(cat ${tokenFile})" ${runtime.apiUrl}/apps/demo/sessions`,
      'Stop with Ctrl-C.',
      '',
    ];
    console.log(lines.filter((l) => l !== undefined).join('\n'));
  } catch (err) {
    console.error(`essh: could not start: ${(err as Error).message}`);
    await runtime?.stop();
    await dev?.stop();
    process.exit(1);
  }
}

void main();
