/**
 * `WorkerPool` acquire + release ops/s with 10,000 workers: half the slots stay leased (as under a
 * busy dispatcher) while one lease is taken and the oldest one released, over and over; the
 * dispatcher's listeners are attached. Runs in its own process (bench/run.ts `pool`).
 */
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import type { Lease } from "../../src/worker-pool/types.ts";
import { median } from "../lib/stats.ts";
import { InstantTransport } from "./fake-transport.ts";

/** Measures acquire+release pairs per second: the median over `windows` windows of `windowMs`. */
export function measurePool({ workers, windowMs, windows }: { workers: number; windowMs: number; windows: number }): Record<string, number | null> {
  const pool = new WorkerPool();
  pool.on("capacityChanged", () => {});
  pool.on("workerStateChanged", () => {});
  // Trusted at once: this measures leasing, not admission (which waits for a first check).
  for (let i = 0; i < workers; i++) pool.add({ id: `w${i}`, transport: new InstantTransport(), slots: 1, admission: "trust" });
  const job = { type: "noop" };
  // A ring of held leases: acquire one, release the oldest.
  const held: Lease[] = [];
  for (let i = 0; i < workers / 2; i++) held.push(pool.acquire(job)!);
  let oldest = 0;
  const churn = (n: number): void => {
    for (let i = 0; i < n; i++) {
      const lease = pool.acquire(job);
      if (!lease) throw new Error("pool had no free slot with half its workers idle");
      held[oldest]!.release();
      held[oldest] = lease;
      oldest = (oldest + 1) % held.length;
    }
  };
  churn(50_000); // warm up the JIT
  const rates: number[] = [];
  for (let w = 0; w < windows; w++) {
    let ops = 0;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < windowMs) {
      churn(1000);
      ops += 1000;
      elapsed = performance.now() - start;
    }
    rates.push((ops * 1000) / elapsed);
  }
  for (const lease of held) lease.release();
  return { "pool.acquire_release_ops_s": median(rates), "pool.workers": workers, "pool.leased_fraction": 0.5 };
}
