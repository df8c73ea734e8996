import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { toolPath } from '../../lib/config.js';
import { workflowsPath } from '../../worker/workers.js';
import { SERVER_DYNAMIC_CONFIG } from '../../server/temporal-dev.js';
import { removeInstallationsLeft } from './installations.js';
import { startTemporalServer } from './temporal-start.js';
import { SEARCH_ATTRIBUTE_KEYS } from '../../shapes/session-workflow.js';

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
    await removeInstallationsLeft(bundlePath);
    await env.teardown();
    await rm(dir, { recursive: true, force: true });
  };
}

/** The `temporal` CLI's dev server; suggests continue-as-new early so that every session test also exercises it. */
function startServer(): Promise<TestWorkflowEnvironment> {
  return startTemporalServer(() => TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: toolPath('temporal') },
      searchAttributes: SEARCH_ATTRIBUTE_KEYS,
      extraArgs: [...SERVER_DYNAMIC_CONFIG, '--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=300', '--log-level', 'error'],
    },
  }), 'the Temporal dev server');
}

const noop = () => undefined;
const quietLogger = { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: console.error };
