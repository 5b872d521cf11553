import { describe, expect, it } from "vitest";
import { METRIC } from "../../src/telemetry/names.ts";
import { PrometheusRegistry } from "../../src/telemetry/prometheus.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { ExecuteRequest } from "../../src/transport/types.ts";
import { serveWorker } from "../../src/worker/index.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { metering, readPoints as read } from "../helpers/metric-reader.ts";

const byAttribute = (points: Array<[Record<string, unknown>, number]> | undefined, key: string) => new Map(points?.map(([a, v]) => [a[key], v]));

const request = (jobId: string, type: string): ExecuteRequest => ({ jobId, type, payload: null, attempt: 1, deadline: Date.now() + 60_000 });

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("worker-side metrics", () => {
  it("InProcessTransport: handler duration by type and outcome, handlers active, and slots free/busy/stuck", async () => {
    const { reader, meterProvider } = metering();
    const registry = new PrometheusRegistry();
    const release = deferred<unknown>();
    const started = deferred();
    const transport = new InProcessTransport({
      slots: 3,
      telemetry: { meterProvider, registry },
      handlers: {
        build: async () => (started.resolve(), release.promise),
        boom: async () => {
          throw new Error("broken");
        },
        // Ignores its signal: keeps its slot busy after the cancel.
        stubborn: async (_payload: unknown, ctx: { signal: AbortSignal }) => (await release.promise, ctx.signal.aborted),
      },
    });
    const running = transport.execute(request("a", "build"), { signal: new AbortController().signal, onEvent: () => {} });
    await started.promise;
    let points = await read(reader);
    expect(byAttribute(points.get(METRIC.handlersActive), "blacktree.job.type").get("build")).toBe(1);
    expect(byAttribute(points.get(METRIC.handlerSlots), "blacktree.slot.state")).toEqual(new Map([["free", 2], ["busy", 1], ["stuck", 0]]));

    await expect(transport.execute(request("b", "boom"), { signal: new AbortController().signal, onEvent: () => {} })).rejects.toMatchObject({ code: "handler_failed" });
    const cancel = new AbortController();
    const cancelled = transport.execute(request("c", "stubborn"), { signal: cancel.signal, onEvent: () => {} });
    cancelled.catch(() => {});
    await waitFor(() => transport.running === 2);
    cancel.abort();
    await expect(cancelled).rejects.toMatchObject({ code: "canceled" });
    points = await read(reader);
    expect(byAttribute(points.get(METRIC.handlerSlots), "blacktree.slot.state")).toEqual(new Map([["free", 1], ["busy", 1], ["stuck", 1]]));

    release.resolve("done");
    await running;
    await waitFor(() => transport.running === 0);
    points = await read(reader);
    const durations = points.get(METRIC.handlerDuration) ?? [];
    const count = (type: string, outcome: string) => durations.find(([a]) => a["blacktree.job.type"] === type && a["blacktree.job.outcome"] === outcome)?.[1];
    expect(count("build", "completed")).toBe(1);
    expect(count("boom", "handler_failed")).toBe(1);
    expect(count("stubborn", "canceled")).toBe(1);
    expect(durations).toHaveLength(3);
    expect([...byAttribute(points.get(METRIC.handlersActive), "blacktree.job.type").values()]).toEqual([0, 0, 0]);
    expect(byAttribute(points.get(METRIC.handlerSlots), "blacktree.slot.state")).toEqual(new Map([["free", 3], ["busy", 0], ["stuck", 0]]));

    const text = registry.metrics();
    expect(text).toContain('blacktree_handler_duration_seconds_count{blacktree_job_outcome="completed",blacktree_job_type="build"} 1');
    expect(text).toContain('blacktree_handler_slots{blacktree_slot_state="free"} 3');
    await transport.close();
    expect(registry.metrics()).not.toContain("blacktree_handler_slots");
    await meterProvider.shutdown();
  });

  it("serveWorker records the same figures for jobs that came over gRPC", async () => {
    const { reader, meterProvider } = metering();
    const worker = await serveWorker({ port: 0, host: "127.0.0.1", slots: 2, handleSignals: false, telemetry: { meterProvider }, handlers: { echo: async (payload: unknown) => payload } });
    const transport = new GrpcTransport({ address: worker.address });
    try {
      for (const id of ["x", "y"]) await transport.execute(request(id, "echo"), { signal: new AbortController().signal, onEvent: () => {} });
      await waitFor(() => worker.running === 0);
      const points = await read(reader);
      expect(points.get(METRIC.handlerDuration)).toEqual([[{ "blacktree.job.type": "echo", "blacktree.job.outcome": "completed" }, 2]]);
      expect(points.get(METRIC.handlersActive)).toEqual([[{ "blacktree.job.type": "echo" }, 0]]);
      expect(byAttribute(points.get(METRIC.handlerSlots), "blacktree.slot.state")).toEqual(new Map([["free", 2], ["busy", 0], ["stuck", 0]]));
    } finally {
      await transport.close();
      await worker.close();
      await meterProvider.shutdown();
    }
  });
});
