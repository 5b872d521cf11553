import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import type { AbortMarker } from "../../src/testing/contract-handlers.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { grpcTestHandlersModule } from "../helpers/grpc-test-handlers.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";
import type { WorkerProcess } from "../helpers/worker-process.ts";

// The whole path with the gRPC wire: JobClient → queue → Dispatcher → WorkerPool → GrpcTransport
// → worker processes, as a host composes it.
describe("the orchestrator over gRPC with two worker processes", () => {
  const workers = new Map<string, WorkerProcess>();
  let queue: MemoryQueue;
  let pool: WorkerPool;
  let monitor: HealthMonitor;
  let dispatcher: Dispatcher;
  let client: JobClient;
  let markers: string;
  const published: JobEvent[] = [];

  beforeAll(async () => {
    markers = await mkdtemp(join(tmpdir(), "blacktree-grpc-pipeline-"));
    queue = new MemoryQueue();
    await queue.subscribe("*", (event) => published.push(event));
    pool = new WorkerPool();
    for (const id of ["w1", "w2"]) {
      const worker = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", slots: 2 });
      workers.set(id, worker);
      pool.add({ id, transport: new GrpcTransport({ address: worker.address }), slots: 2 });
    }
    monitor = new HealthMonitor({ target: pool, intervalMs: 500, timeoutMs: 500 });
    monitor.start();
    dispatcher = new Dispatcher({ queue, events: queue, pool, retry: { baseDelayMs: 50, maxDelayMs: 200 } });
    await dispatcher.start();
    client = new JobClient({ queue, events: queue, defaults: { timeoutMs: 30_000, maxAttempts: 3 } });
  });
  afterAll(async () => {
    await client?.close();
    await dispatcher?.close({ signal: AbortSignal.timeout(2000) });
    monitor?.close();
    await pool?.close();
    await queue?.close();
    for (const worker of workers.values()) await worker.stop();
    if (markers) await rm(markers, { recursive: true, force: true });
  });

  it("runs a job whose worker is SIGKILLed mid-run again on the other worker, at once", async () => {
    const handle = await client.submit({ type: "firstAttemptHangs", payload: null });
    await waitFor(() => published.some((e) => e.jobId === handle.id && e.kind === "progress") || undefined, { what: "attempt 1 running" });
    const running = pool.list().find((w) => w.busySlots > 0);
    expect(running).toBeDefined();
    const victim = workers.get(running?.id as string) as WorkerProcess;
    const survivor = [...workers.entries()].find(([id]) => id !== running?.id)?.[1] as WorkerProcess;
    victim.kill("SIGKILL");
    expect(await handle.result({ timeoutMs: 10_000 })).toEqual({ attempt: 2, pid: survivor.pid });
    // "At once": the dead connection itself failed attempt 1 (not a ping or health timeout later).
    const retrying = published.find((e) => e.jobId === handle.id && e.kind === "state" && e.state === "retrying");
    expect(retrying).toMatchObject({ attempt: 1, error: { code: "worker_lost" } });
    expect(retrying?.kind === "state" ? retrying.error?.message : "").not.toMatch(/did not answer|timed out|health/);
    expect(pool.get(running?.id as string)?.state).toBe("unhealthy");
  });

  it("cancels a running job: the handler's signal fires on the worker and the job ends cancelled exactly once", async () => {
    const marker = join(markers, `${randomUUID()}.json`);
    const handle = await client.submit({ type: "waitForAbort", payload: { marker } });
    await waitFor(() => published.some((e) => e.jobId === handle.id && e.kind === "progress") || undefined, { what: "job running" });
    const cancelledAt = Date.now();
    await handle.cancel();
    await expect(handle.result({ timeoutMs: 5000 })).rejects.toMatchObject({ code: "canceled" });
    // The handler's signal fired for this cancel (its reason), after it was sent: no wall-clock bound.
    // Parsed inside the wait: the worker's writeFile creates the file before it fills it.
    const fired = await waitFor(async () => JSON.parse(await readFile(marker, "utf8")) as AbortMarker, { what: "abort marker" });
    expect(fired).toMatchObject({ jobId: handle.id, code: "canceled", reason: "requested" });
    expect(fired.at).toBeGreaterThanOrEqual(cancelledAt);
    await dispatcher.onIdle({ timeoutMs: 5000 });
    const outcomes = published.filter((e) => e.jobId === handle.id && e.kind === "result");
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toMatchObject({ outcome: { status: "cancelled", reason: "requested" } });
  });
});
