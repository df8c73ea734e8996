// A vitest setup file: a heavy file (test/support/heavy-files.ts) takes the run's heavy-file lock before its own
// set-up and gives it back after its own clean-up, so that no two heavy files load the machine at once.
import path from 'node:path';
import { afterAll, beforeAll, inject } from 'vitest';
import type { File, Suite } from '@vitest/runner';
import { isHeavy, takeLock } from './heavy-files.js';

/** Waiting for the lock is waiting for the other heavy file to finish, however long that takes. */
const WAIT_FOR_LOCK_MS = 60 * 60_000;

let release: (() => void) | undefined;

beforeAll(async ({}, suite: Readonly<Suite | File>) => {
  const file = suite.file.filepath;
  if (!isHeavy(file)) return;
  // One lock per run: the global set-up's directory is the run's own.
  const lock = await takeLock(path.join(path.dirname(inject('workflowBundlePath')), 'heavy-file.lock'), path.relative(process.cwd(), file));
  release = lock.release;
  if (lock.waitedMs > 1000) console.info(`${path.relative(process.cwd(), file)} waited ${(lock.waitedMs / 1000).toFixed(0)} s for another heavy file to finish`);
}, WAIT_FOR_LOCK_MS);

afterAll(() => release?.());
