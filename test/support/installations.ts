import { appendFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Docker from 'dockerode';
import { removeInstallationFromEngine } from '../../host/containers.js';

/**
 * The installations a test run makes, one per line in a file beside the run's workflow bundle, for the
 * run's teardown (test/support/global-setup.ts) to remove from the engine whatever of each is left: a file
 * whose afterAll timed out, or a process it spawned that made the session network again after `stop()`
 * removed it, would otherwise keep one of the engine's few dozen address ranges for good (seventeen
 * were found left after a day of runs).
 */
const installationsFile = (workflowBundlePath: string) => path.join(path.dirname(workflowBundlePath), 'installations.txt');

export function noteInstallation(workflowBundlePath: string, installation: string) {
  appendFileSync(installationsFile(workflowBundlePath), `${installation}\n`);
}

export async function removeInstallationsLeft(workflowBundlePath: string) {
  const ids = new Set((await readFile(installationsFile(workflowBundlePath), 'utf8').catch(() => '')).split('\n').filter(Boolean));
  const docker = new Docker();
  for (const id of ids) await removeInstallationFromEngine(docker, id).catch(() => undefined);
}
