/**
 * Idle section, orchestrator side: a `WorkerPool` of one `GrpcTransport` per worker address and a
 * `HealthMonitor` at `intervalMs` (1 s), nothing else: no queue, no jobs. Tells the parent when a
 * worker turns unhealthy (`unhealthy` event with the time), so failure detection can be timed.
 * Args: --interval MS
 */
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { childArgs, sendEvent, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";

const intervalMs = Number(childArgs().interval ?? 1000);

try {
  const pool = new WorkerPool();
  const monitor = new HealthMonitor({ target: pool, intervalMs });
  pool.on("workerStateChanged", ({ workerId, to, reason }) => {
    if (to === "unhealthy") sendEvent("unhealthy", { workerId, reason, at: nowMs() });
  });
  serveChild(
    {
      /** Adds a worker per address and resolves once all are admitted (their slots count in the capacity). */
      add: async ({ addresses, slots, timeoutMs }: { addresses: string[]; slots: number; timeoutMs: number }) => {
        monitor.start();
        const deadline = Date.now() + timeoutMs;
        // A hundred at a time, as a farm grows: a thousand handshakes at once on a loaded machine
        // time out and back off, which measures the machine rather than the orchestrator.
        for (let first = 0; first < addresses.length; first += 100) {
          addresses.slice(first, first + 100).forEach((address, i) => pool.add({ id: `idle-${first + i}`, transport: new GrpcTransport({ address }), slots }));
          const expected = Math.min(addresses.length, first + 100) * slots;
          while (pool.capacity < expected) {
            if (Date.now() > deadline) throw new Error(`${pool.capacity / slots} of ${addresses.length} workers admitted within ${timeoutMs} ms`);
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
        return { admitted: addresses.length };
      },
      state: ({ workerId }: { workerId: string }) => pool.get(workerId)?.state ?? null,
    },
    {
      onExit: async () => {
        await monitor.close();
        await pool.close();
      },
    },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
