// The folders' layering (.dependency-cruiser.cjs: each folder imports only the layers below it, no
// circle of files or folders, at most 5 upward imports each with its reason), checked by
// dependency-cruiser on the tree as it is. A failure is depcruise's own report: the rule, and the
// import that breaks it. `npm run lint:layers` prints the same.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';

const DEPCRUISE = path.join(projectRoot, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

it('every import keeps to the layers of .dependency-cruiser.cjs', async () => {
  const report = await promisify(execFile)(process.execPath, [DEPCRUISE, '--config', '.dependency-cruiser.cjs', '--output-type', 'err-long', '.'], { cwd: projectRoot })
    .then(() => '', (err: { stdout?: string; stderr?: string; message: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message);
  expect(report, `dependency-cruiser found imports against the layering:\n${report}`).toBe('');
}, 120_000);
