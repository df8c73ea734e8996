import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode } from '@temporalio/worker';
import Docker from 'dockerode';
import type { TestProject } from 'vitest/node';
import { removeInstallationFromEngine } from '../host/containers.js';
import { toolPath } from '../lib/config.js';
import { workflowsPath } from '../worker/workers.js';
import { EAGER_START_ARGS } from '../stack/temporal-dev.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../workflows/definitions.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    workflowBundlePath: string;
  }
}

/**
 * One real Temporal dev server (the `temporal` CLI from the project's venv) for the whole run; every
 * test file gets a namespace of its own on it. The workflow bundle is built once and shared.
 */
export default async function setup(project: TestProject) {
  const env = await startServer();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'essh-test-'));
  const bundle = await bundleWorkflowCode({ workflowsPath, logger: quietLogger });
  const bundlePath = path.join(dir, 'workflow-bundle.js');
  await writeFile(bundlePath, bundle.code);
  project.provide('temporalAddress', env.connection.options.address);
  project.provide('workflowBundlePath', bundlePath);
  return async () => {
    await removeInstallationsLeft(installationsFile(bundlePath));
    await env.teardown();
    await rm(dir, { recursive: true, force: true });
  };
}

/** The file where test/harness.ts notes each installation a run makes: one per line. */
export const installationsFile = (workflowBundlePath: string) => path.join(path.dirname(workflowBundlePath), 'installations.txt');

async function removeInstallationsLeft(file: string) {
  const ids = new Set((await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean));
  const docker = new Docker();
  for (const id of ids) await removeInstallationFromEngine(docker, id).catch(() => undefined);
}

/**
 * The SDK gives the server 5 s to answer, which a machine busy compiling native modules (the first
 * `npm ci` of a Node 24 run) can miss, and once missed it three times in 30 s on an idle machine: a
 * run must not fail for that, so it is tried five times over about a minute.
 */
async function startServer(): Promise<TestWorkflowEnvironment> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await TestWorkflowEnvironment.createLocal({
        server: {
          executable: { type: 'existing-path', path: toolPath('temporal') },
          searchAttributes: SEARCH_ATTRIBUTE_KEYS,
          // Suggest continue-as-new early so that every session test also exercises it.
          extraArgs: [...EAGER_START_ARGS, '--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=300', '--log-level', 'error'],
        },
      });
    } catch (err) {
      if (attempt === 5 || !/did not start within/.test((err as Error).message)) throw err;
      console.error(`the Temporal dev server did not answer within the SDK's 5 s (attempt ${attempt} of 5); starting it again`);
      await new Promise((r) => setTimeout(r, 2000 * 2 ** (attempt - 1)));
    }
  }
}

const noop = () => undefined;
const quietLogger = { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: console.error };
