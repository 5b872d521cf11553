/**
 * Priority lanes in the bench's product processes, chosen by the environment, so the same product
 * runs with one busy level and with every level busy in the same rounds:
 * - `BENCH_PRIORITY` unset: every job at the default level (one busy lane; the lanes exist);
 * - `BENCH_PRIORITY=spread`: the producer spreads its jobs over the five levels, round-robin;
 * - `BENCH_PRIORITY=single-queue`: `AmqpQueue` built with `priorityLanes: false` (the one queue of
 *   before the lanes), default-level jobs.
 */
import { PRIORITY_LEVELS } from "../../src/job/envelope.ts";

type Mode = "default" | "spread" | "single-queue";

function mode(): Mode {
  const value = process.env.BENCH_PRIORITY;
  if (value === undefined || value === "" || value === "default") return "default";
  if (value === "spread" || value === "single-queue") return value;
  throw new Error(`BENCH_PRIORITY must be spread, single-queue or unset, got ${JSON.stringify(value)}`);
}

/** The `AmqpQueue` options of this mode (every process of a round declares the same topology). */
export function benchQueueOptions(): { priorityLanes?: boolean } {
  return mode() === "single-queue" ? { priorityLanes: false } : {};
}

/** The priority of the producer's `i`-th job, or undefined for the default. */
export function benchPriority(i: number): number | undefined {
  return mode() === "spread" ? 1 + (i % PRIORITY_LEVELS) : undefined;
}
