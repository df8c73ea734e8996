// The history recorder's own config: `npm run record-histories` (ESSH_REPLAY_PREFIX=vN). The default
// config (vitest.config.ts) only picks up test/**/*.test.ts, so the recorder never runs in `npm test`.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/replay/record-histories.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
