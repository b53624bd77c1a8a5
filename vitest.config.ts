import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The engine tests load the real model; two workers fit the 2-core machines CI runs on.
    maxWorkers: 2,
  },
});
