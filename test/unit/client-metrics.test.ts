import { describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { METRIC } from "../../src/telemetry/names.ts";
import { PrometheusRegistry } from "../../src/telemetry/prometheus.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { serveWorker } from "../../src/worker/index.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { metering, pointValue, readPoints } from "../helpers/metric-reader.ts";

const SENT = METRIC.sentMessages;
const CONSUMED = METRIC.consumedMessages;
const system = (name: string) => ({ "messaging.system.name": name });

describe("MemoryQueue telemetry", () => {
  it("counts the events, cancels and redrives it carries, and no job twice beside JobClient and Dispatcher", async () => {
    const { reader, meterProvider } = metering();
    const registry = new PrometheusRegistry();
    const telemetry = { meterProvider, registry };
    const queue = new MemoryQueue({ telemetry });
    const seen: JobEvent[] = [];
    const sub = await queue.subscribe("j1", (event) => seen.push(event));
    await queue.publish({ kind: "progress", jobId: "j1", attempt: 1, at: 0, progress: 0.5 });
    await queue.publish({ kind: "progress", jobId: "other", attempt: 1, at: 0, progress: 0.5 });
    const cancels: string[] = [];
    await queue.subscribeCancels((command) => cancels.push(command.jobId));
    await queue.cancel({ jobId: "j1", reason: "requested", at: Date.now() });
    await waitFor(() => seen.length === 1 && cancels.length === 1);
    await sub.close();

    const pool = new WorkerPool({ telemetry });
    pool.add({ admission: "trust", id: "w1", transport: new InProcessTransport({ handlers: { ok: async () => 1 } }) });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, telemetry });
    await dispatcher.start();
    const client = new JobClient({ queue, events: queue, telemetry });
    await (await client.submit({ type: "ok", payload: null })).result({ timeoutMs: 5000 });
    await dispatcher.onIdle();
    await dispatcher.close();
    await client.close();
    await pool.close();

    const points = await readPoints(reader);
    const sent = points.get(SENT);
    expect(pointValue(sent, { ...system("memory"), "messaging.destination.name": "jobs.events", "messaging.operation.name": "publish" })).toBeGreaterThanOrEqual(2);
    expect(pointValue(sent, { ...system("memory"), "messaging.destination.name": "jobs.cancels", "messaging.operation.name": "cancel" })).toBe(1);
    // One submit, one send: the queue does not count the job JobClient already counted.
    expect(sent?.filter(([a]) => a["messaging.destination.name"] === "jobs").map(([, v]) => v)).toEqual([1]);
    // Ours, and the dispatcher's: a cancel is kept for listeners that subscribe later.
    expect(pointValue(points.get(CONSUMED), { "messaging.destination.name": "jobs.cancels", "messaging.operation.name": "receive" })).toBe(2);
    expect(pointValue(points.get(CONSUMED), { "messaging.destination.name": "jobs.events", "messaging.operation.name": "receive" })).toBeGreaterThanOrEqual(1);
    expect(pointValue(points.get(CONSUMED), { "messaging.destination.name": "jobs", "messaging.operation.name": "process" })).toBe(1);
    expect(pointValue(points.get(METRIC.operationDuration), { "messaging.destination.name": "jobs.cancels", "messaging.operation.type": "send" })).toBe(1);
    expect(registry.metrics()).toContain('messaging_client_sent_messages_total{messaging_destination_name="jobs.cancels",messaging_operation_name="cancel",messaging_system_name="memory"} 1');
    await queue.close();
    await meterProvider.shutdown();
  });

  it("counts redriven jobs, and a failed send with its error.type", async () => {
    const { reader, meterProvider } = metering();
    const queue = new MemoryQueue({ telemetry: { meterProvider } });
    await queue.enqueue(contractJob());
    const consumer = await queue.consume((delivery) => void delivery.deadLetter("test"), { prefetch: 1 });
    await waitFor(() => queue.deadLetters().length === 1);
    await consumer.cancel();
    expect((await queue.redrive()).redriven).toHaveLength(1);
    await queue.close();
    await expect(queue.publish({ kind: "progress", jobId: "x", attempt: 1, at: 0, progress: 0 })).rejects.toMatchObject({ code: "queue_closed" });
    const points = await readPoints(reader);
    expect(pointValue(points.get(SENT), { "messaging.destination.name": "jobs", "messaging.operation.name": "redrive" })).toBe(1);
    expect(pointValue(points.get(SENT), { "messaging.destination.name": "jobs.events", "error.type": "queue_closed" })).toBe(1);
    await meterProvider.shutdown();
  });
});

describe("GrpcTransport telemetry", () => {
  it("records the open session, ping round trips, and a lost session's reconnect with its downtime", async () => {
    const { reader, meterProvider } = metering();
    const handlers = { echo: async (payload: unknown) => payload };
    let worker = await serveWorker({ port: 0, host: "127.0.0.1", handleSignals: false, handlers });
    const port = worker.port;
    const transport = new GrpcTransport({ address: worker.address, pingIntervalMs: 10, pingTimeoutMs: 2000, reconnect: { baseDelayMs: 20, maxDelayMs: 100 }, telemetry: { meterProvider } });
    const states: string[] = [];
    const unwatch = transport.watch((state) => states.push(state));
    try {
      await transport.execute({ jobId: "a", type: "echo", payload: 1, attempt: 1, deadline: Date.now() + 10_000 }, { signal: new AbortController().signal, onEvent: () => {} });
      const grpc = { "blacktree.connection.kind": "grpc" };
      await waitFor(async () => ((pointValue((await readPoints(reader)).get(METRIC.pingDuration), grpc) ?? 0) >= 2));
      expect(pointValue((await readPoints(reader)).get(METRIC.connectionsOpen), grpc)).toBe(1);

      await worker.close();
      await waitFor(() => states.includes("lost"));
      expect(pointValue((await readPoints(reader)).get(METRIC.connectionsOpen), grpc)).toBe(0);
      worker = await serveWorker({ port, host: "127.0.0.1", handleSignals: false, handlers });
      await waitFor(() => states.at(-1) === "ready", { timeoutMs: 10_000 });
      const points = await readPoints(reader);
      expect(pointValue(points.get(METRIC.connectionsOpen), grpc)).toBe(1);
      expect(pointValue(points.get(METRIC.reconnects), grpc)).toBe(1);
      expect(pointValue(points.get(METRIC.downtime), grpc)).toBe(1);
    } finally {
      unwatch();
      await transport.close();
      await worker.close();
    }
    expect(pointValue((await readPoints(reader)).get(METRIC.connectionsOpen), { "blacktree.connection.kind": "grpc" })).toBe(0);
    await meterProvider.shutdown();
  });
});
