import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // A test file whose programs are missing says so in one line (scripts/requirements.tsv).
    setupFiles: ['test/programs-present.ts'],
    // Each file runs its own essh runtime in its own Temporal namespace; two at a time fits 2 cores.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
