import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DnsWorkers } from "../../src/discovery/dns-workers.ts";
import { WorkerDiscovery } from "../../src/discovery/worker-discovery.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { JobClient } from "../../src/client/job-client.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import { serveWorker } from "../../src/worker/serve-worker.ts";
import type { WorkerServer } from "../../src/worker/serve-worker.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { startDnsResponder } from "../helpers/dns-responder.ts";
import type { DnsResponder } from "../helpers/dns-responder.ts";

// DNS discovery against a real DNS server on loopback (UDP, started here), with real workers:
// the records change, the pool follows.
describe("DNS discovery", () => {
  let dns: DnsResponder;
  const workers: WorkerServer[] = [];

  beforeAll(async () => {
    dns = await startDnsResponder();
  });
  afterAll(async () => {
    await dns?.close();
    for (const worker of workers) await worker.close();
  });

  const serve = async (host = "127.0.0.1", port = 0) => {
    const worker = await serveWorker({ handlers: contractHandlers, host, port, handleSignals: false, id: `dns-${randomUUID().slice(0, 6)}` });
    workers.push(worker);
    return worker;
  };

  async function follow(source: DnsWorkers) {
    const pool = new WorkerPool();
    const discovery = new WorkerDiscovery({ pool, sources: [source], transportFor: (worker) => new GrpcTransport({ address: worker.address }) });
    const log: string[] = [];
    discovery.on("workerDiscovered", ({ worker }) => log.push(`+${worker.address}`));
    discovery.on("workerForgotten", ({ workerId }) => log.push(`-${workerId}`));
    await discovery.start();
    const serving = () =>
      pool
        .list()
        .filter((w) => w.state === "idle" || w.state === "busy")
        .map((w) => w.id)
        .sort();
    return { pool, discovery, log, serving };
  }

  it("follows SRV records as they are added and removed, re-resolving on its interval, and runs jobs on what it found", async () => {
    const [w1, w2, w3] = [await serve(), await serve(), await serve()];
    const name = "_blacktree._tcp.workers.test";
    const srv = (...ws: WorkerServer[]) => ({ srv: { [name]: ws.map((w) => ({ target: "127.0.0.1", port: w.port })) } });
    dns.setZone(srv(w1, w2));
    const source = new DnsWorkers({ name, servers: [dns.server], intervalMs: 100 });
    const { pool, discovery, log, serving } = await follow(source);
    try {
      const address = (w: WorkerServer) => `127.0.0.1:${w.port}`;
      await waitFor(() => serving().length === 2, { timeoutMs: 10_000, what: "both SRV targets admitted" });
      expect(serving()).toEqual([address(w1), address(w2)].sort());

      // A job runs on a worker found by DNS.
      const queue = new MemoryQueue();
      const dispatcher = new Dispatcher({ queue, events: queue, pool });
      const client = new JobClient({ queue, events: queue });
      await dispatcher.start();
      const handle = await client.submit({ type: "echo", payload: "found by dns" });
      expect(await handle.result({ timeoutMs: 10_000 })).toBe("found by dns");
      await dispatcher.close();
      await client.close();
      await queue.close();

      // w1's record goes, w3's comes: at the next resolution the pool follows.
      dns.setZone(srv(w2, w3));
      await waitFor(() => serving().join() === [address(w2), address(w3)].sort().join(), { timeoutMs: 10_000, what: "the pool following the new records" });
      expect(pool.get(address(w1))).toBeUndefined();
      expect(log).toEqual(expect.arrayContaining([`+${address(w1)}`, `+${address(w2)}`, `-${address(w1)}`, `+${address(w3)}`]));
      expect(log.indexOf(`-${address(w1)}`)).toBeLessThan(log.indexOf(`+${address(w3)}`) + 1);

      // The name goes away (NXDOMAIN): every worker it named leaves.
      dns.setZone({});
      await waitFor(() => pool.size === 0, { timeoutMs: 10_000, what: "every worker gone with the name" });
    } finally {
      await discovery.close();
      await pool.close();
    }
  });

  it("follows A records on a shared port, and keeps its workers when a lookup fails", async () => {
    const first = await serve("127.0.0.2");
    const second = await serve("127.0.0.3", first.port);
    const name = "workers.test";
    dns.setZone({ a: { [name]: ["127.0.0.2"] } });
    const source = new DnsWorkers({ name, port: first.port, servers: [dns.server], intervalMs: 100, timeoutMs: 300 });
    const errors: string[] = [];
    source.on("error", ({ error }) => errors.push(error.code));
    const { pool, discovery, serving } = await follow(source);
    try {
      await waitFor(() => serving().length === 1, { timeoutMs: 10_000, what: "the first A record admitted" });
      dns.setZone({ a: { [name]: ["127.0.0.2", "127.0.0.3"] } });
      await waitFor(() => serving().length === 2, { timeoutMs: 10_000, what: "the added A record admitted" });
      expect(serving()).toEqual([`127.0.0.2:${first.port}`, `127.0.0.3:${second.port}`]);
      expect(pool.get(`127.0.0.3:${second.port}`)?.description?.workerId).toBe(second.id);

      // The DNS server stops answering: lookups time out, the workers found stay.
      await dns.close();
      await waitFor(() => errors.length >= 2, { timeoutMs: 10_000, what: "failed lookups reported" });
      expect(errors.every((code) => code === "unavailable")).toBe(true);
      expect(serving()).toHaveLength(2);
    } finally {
      await discovery.close();
      await pool.close();
      dns = await startDnsResponder();
    }
  });

  it("refuses A records without a port, naming the option", () => {
    expect(() => new DnsWorkers({ name: "workers.test" })).toThrow(expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("`port`") }));
  });
});
