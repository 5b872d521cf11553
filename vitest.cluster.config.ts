import { defineConfig } from "vitest/config";

/**
 * `npm run test:cluster`: the tests that start RabbitMQ nodes of their own (a single node that
 * restarts, a three-node cluster losing nodes). Apart from `npm test` because each file spends
 * 10-40 s starting its brokers; `.ci/run` runs both.
 */
export default defineConfig({
  test: {
    name: "cluster",
    include: ["test/cluster/**/*.test.ts"],
    environment: "node",
    testTimeout: 180_000,
    hookTimeout: 400_000,
    // Each file runs its own brokers and processes; one file at a time on a 2-core machine.
    fileParallelism: false,
  },
});
