/**
 * Priority lanes in the bench (issue 13): the product's throughput with its jobs spread over the
 * five priority levels (five busy quorum queues, the lane consumer choosing between them at every
 * free slot), and with `priorityLanes: false` (the single queue of before the lanes), each as a
 * ratio to the bare product (every job at the default level: one busy lane) in the same rounds.
 * Registered in bench/features.ts; the product processes read `BENCH_PRIORITY`
 * (bench/product/priority-mode.ts).
 *
 *   npm run bench -- --only priority,single-queue
 */
import type { ProductFeature } from "./features.ts";

const requirements = [
  { entry: "src/queue/amqp/lane-consumer.ts", symbols: ["AmqpLaneConsumer"] },
  { entry: "src/queue/lanes.ts", symbols: ["LanePicker"] },
] as const;

/** The priority-lane features, in report order. */
export const PRIORITY_FEATURES: readonly ProductFeature[] = [
  {
    id: "priority",
    label: "jobs spread over the 5 priority levels (5 busy lanes)",
    target: 0.9,
    requirements,
    // The lanes are deleted with the round's topology (bench/lib/rabbit.ts deleteTopology).
    prepare: async () => ({ env: { BENCH_PRIORITY: "spread" } }),
  },
  {
    id: "single-queue",
    label: "priorityLanes: false (one queue, no lanes)",
    requirements,
    prepare: async () => ({ env: { BENCH_PRIORITY: "single-queue" } }),
  },
];
