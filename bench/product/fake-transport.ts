/**
 * The cheapest possible worker transport, for measuring the pool and the health monitor alone:
 * `check()` answers "serving" at once, `execute()` resolves at once with null.
 */
import type { HealthStatus, WorkerDescription, WorkerTransport } from "../../src/transport/types.ts";

const serving: Promise<HealthStatus> = Promise.resolve("serving");

/** A transport that answers immediately; counts its health checks. */
export class InstantTransport implements WorkerTransport {
  checks = 0;

  execute(): Promise<unknown> {
    return Promise.resolve(null);
  }

  check(): Promise<HealthStatus> {
    this.checks++;
    return serving;
  }

  describe(): Promise<WorkerDescription> {
    return Promise.resolve({ slots: 1, labels: {}, jobTypes: [], version: "bench" });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
