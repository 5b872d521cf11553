/**
 * The cost of a product feature, as a ratio to the bare product in the same rounds: each round
 * runs the bare product and the product with each selected feature on (order rotated), fresh
 * processes and topology every time, and the ratio is taken within the round, then the median.
 * The job store and telemetry have their own sections (run.ts `store`, `telemetry`) with the same
 * rule; this registry holds the others.
 *
 * Adding a feature: write one entry of `FEATURES` below. `prepare()` returns the environment
 * every product process of that round inherits (the product's processes read it, as
 * bench/product/discovery-mode.ts does) and a cleanup for what the round left on the broker.
 * Its figures appear as `throughput.feature_<id>_jobs_s` and `ratios.<id>_vs_bare`, its target (if
 * any) in the table, and `--only <id>` runs it alone against the bare product.
 */
import { randomUUID } from "node:crypto";
import type { Requirement } from "./lib/requirements.ts";
import { deleteQueues } from "./lib/rabbit.ts";
import { PRIORITY_FEATURES } from "./priority-lanes.ts";

/** What one round of a feature needs. */
export interface FeatureRound {
  /** Variables every product process of the round inherits. */
  env: Record<string, string>;
  /** Removes what the round left behind (exchanges, schemas); runs whatever happened. */
  cleanup?: () => Promise<void>;
}

/** One product feature whose cost the bench measures. */
export interface ProductFeature {
  /** Section name for `--only`, and the key of its figures. */
  id: string;
  /** How the table names the product with it on. */
  label: string;
  /** The least ratio to the bare product that meets its target, if it has one. */
  target?: number;
  /** The product pieces it needs (the section is `null` with the reason while one is missing). */
  requirements: readonly Requirement[];
  /** Sets up one round with the feature on. */
  prepare(): Promise<FeatureRound>;
}

/** Every feature measured by the `features` part of the bench, in report order. */
export const FEATURES: readonly ProductFeature[] = [
  {
    id: "discovery",
    label: "discovery on (workers announce on the broker, BrokerWorkers + WorkerDiscovery)",
    requirements: [
      { entry: "src/discovery/broker-announcer.ts", symbols: ["announceWorker"] },
      { entry: "src/discovery/broker-workers.ts", symbols: ["BrokerWorkers"] },
      { entry: "src/discovery/worker-discovery.ts", symbols: ["WorkerDiscovery"] },
    ],
    prepare: async () => {
      const exchange = `bench-discovery-${randomUUID()}`;
      return { env: { BENCH_DISCOVERY_EXCHANGE: exchange }, cleanup: () => deleteQueues([], [exchange]) };
    },
  },
  ...PRIORITY_FEATURES,
];
