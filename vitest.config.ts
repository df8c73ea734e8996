import { defineConfig } from 'vitest/config';
import SpreadHeavyFiles from './test/support/sequencer.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // A test file whose programs are missing says so in one line (scripts/requirements.tsv).
    // heavy-lock: one heavy file at a time (docs/tests.md); file-cost: ESSH_TEST_COST_LOG's figures per
    // file, counted once the lock is taken.
    setupFiles: ['test/support/programs-present.ts', 'test/support/heavy-lock.ts', 'test/support/file-cost.ts'],
    sequence: { sequencer: SpreadHeavyFiles },
    // Each file runs its own essh runtime in its own Temporal namespace. Three at a time on 2 cores: most
    // files spend their time waiting on Docker, Temporal and timers (2 → 3 took the suite from 707 to
    // 474 s on the 2-core machine, the same tests green).
    pool: 'forks',
    maxWorkers: 3,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
