import { EventEmitter } from "eventemitter3";
import { describe, expect, it } from "vitest";
import { StaticWorkers } from "../../src/discovery/static-workers.ts";
import type { WorkerSource, WorkerSourceEvents } from "../../src/discovery/types.ts";
import { WorkerDiscovery } from "../../src/discovery/worker-discovery.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

/** A source a test drives by hand. */
class ManualSource extends EventEmitter<WorkerSourceEvents> implements WorkerSource {
  async start(): Promise<void> {}
  async close(): Promise<void> {}
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("WorkerDiscovery", () => {
  it("adds a static list of workers, each admitted once it answers", async () => {
    const pool = new WorkerPool();
    const addresses: string[] = [];
    const discovery = new WorkerDiscovery({
      pool,
      sources: [new StaticWorkers({ workers: ["10.0.0.1:50051", { address: "10.0.0.2:50051", id: "second" }] })],
      transportFor: (worker) => {
        addresses.push(worker.address);
        return new FakeTransport();
      },
    });
    await discovery.start();
    await flush();
    expect(addresses).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    expect(pool.list().map((w) => [w.id, w.state])).toEqual([
      ["10.0.0.1:50051", "idle"],
      ["second", "idle"],
    ]);
    await pool.close();
  });

  it("drains a worker lost gracefully, removes a silent one at once, and leaves workers added by hand alone", async () => {
    const pool = new WorkerPool();
    const source = new ManualSource();
    const discovery = new WorkerDiscovery({ pool, sources: [source], transportFor: () => new FakeTransport() });
    await discovery.start();
    source.emit("workerFound", { worker: { id: "a", address: "10.0.0.1:1" } });
    source.emit("workerFound", { worker: { id: "b", address: "10.0.0.2:1" } });
    await flush();
    pool.add({ id: "by-hand", transport: new FakeTransport(), admission: "trust" });
    // The least recently leased (never leased, added first) worker: "a".
    const lease = pool.acquire({ type: "x" });
    expect(lease?.workerId).toBe("a");
    source.emit("workerLost", { id: "a", reason: "said goodbye", graceful: true });
    expect(pool.get("a")?.state).toBe("draining");
    source.emit("workerLost", { id: "b", reason: "fell silent", graceful: false });
    expect(pool.get("b")).toBeUndefined();
    source.emit("workerLost", { id: "by-hand", reason: "not ours", graceful: false });
    expect(pool.get("by-hand")).toBeDefined();
    lease?.release();
    await flush();
    expect(pool.list().map((w) => w.id)).toEqual(["by-hand"]);
    await discovery.close();
    await pool.close();
  });

  it("refuses a bad static address naming the entry", () => {
    expect(() => new StaticWorkers({ workers: ["10.0.0.1"] })).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("workers[0]") }));
  });
});
