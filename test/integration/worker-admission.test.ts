import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents } from "../../src/dispatcher/types.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { GrpcTransportOptions } from "../../src/transport/grpc/index.ts";
import { serveWorker } from "../../src/worker/serve-worker.ts";
import type { WorkerPoolEvents } from "../../src/worker-pool/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { ensureTestCerts } from "../helpers/certs.ts";
import { grpcTestHandlersModule } from "../helpers/grpc-test-handlers.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** An orchestrator in this process: pool (no health monitor), dispatcher, client, all on one MemoryQueue. */
async function orchestrator() {
  const queue = new MemoryQueue();
  const pool = new WorkerPool();
  const dispatcher = new Dispatcher({ queue, events: queue, pool });
  const client = new JobClient({ queue, events: queue });
  const seen: Array<[keyof DispatcherEvents, { attempt: number; workerId?: string; reason?: string }]> = [];
  for (const event of ["jobStarted", "jobCompleted", "jobRetrying", "jobFailed", "jobDeferred"] as const) {
    dispatcher.on(event, (payload: DispatcherEvents[typeof event][0]) => seen.push([event, payload as never]));
  }
  cleanups.push(() => queue.close(), () => pool.close(), () => client.close(), () => dispatcher.close({ signal: AbortSignal.timeout(5000) }));
  await dispatcher.start();
  return { queue, pool, dispatcher, client, seen };
}

/** A port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("workers joining a pool", () => {
  it("keeps each worker it cannot connect to out of the pool with the reason, in list() and events", async () => {
    const certs = await ensureTestCerts();
    const tlsWorker = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", handleSignals: false, tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert } });
    cleanups.push(() => tlsWorker.close());
    const at = `localhost:${tlsWorker.port}`;
    const cases: Array<[string, GrpcTransportOptions, string]> = [
      ["other-ca", { address: at, tls: { ca: certs.caCert, cert: certs.otherCaClientCert, key: certs.otherCaClientKey } }, "unknown CA"],
      ["expired", { address: at, tls: { ca: certs.caCert, cert: certs.expiredClientCert, key: certs.expiredClientKey } }, "expired on 2020-01-02"],
      ["unknown-ca", { address: at, tls: { ca: certs.otherCaCert, cert: certs.clientCert, key: certs.clientKey } }, "not signed by a CA this orchestrator trusts (unknown CA)"],
      ["name-mismatch", { address: at, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey, serverName: "elsewhere.example" } }, "not valid for the name elsewhere.example"],
      ["plaintext", { address: `127.0.0.1:${tlsWorker.port}` }, "speaks TLS but this orchestrator connects in plaintext"],
      ["refused", { address: `127.0.0.1:${await freePort()}` }, "connection refused"],
    ];
    const { pool } = await orchestrator();
    const events: Array<WorkerPoolEvents["workerUnavailable"][0]> = [];
    pool.on("workerUnavailable", (event) => events.push(event));
    for (const [id, options] of cases) pool.add({ id, transport: new GrpcTransport({ connectTimeoutMs: 3000, ...options }) });
    await waitFor(() => cases.every(([id]) => events.some((event) => event.workerId === id)), { timeoutMs: 20_000, what: "every worker's reason" });
    for (const [id, , reason] of cases) {
      expect(pool.get(id), id).toMatchObject({ state: "joining", reason: expect.stringContaining(reason) });
      expect(events.find((event) => event.workerId === id)?.reason, id).toContain(reason);
    }
    expect(pool.capacity).toBe(0);
  });

  it("costs no attempt for a worker that is not up yet: the job waits, then runs as attempt 1", async () => {
    const port = await freePort();
    const { pool, client, seen } = await orchestrator();
    pool.add({ id: "late", transport: new GrpcTransport({ address: `127.0.0.1:${port}`, connectTimeoutMs: 2000, reconnect: { baseDelayMs: 50, maxDelayMs: 200 } }) });
    const handle = await client.submit({ type: "echo", payload: "late but whole", maxAttempts: 1 });
    await waitFor(() => pool.get("late")?.reason?.includes("connection refused"), { timeoutMs: 10_000, what: "the worker known as down" });
    const worker = await startWorkerProcess({ port });
    cleanups.push(() => worker.stop());
    expect(await handle.result({ timeoutMs: 20_000 })).toBe("late but whole");
    // The result is published before the dispatcher settles and says so.
    await waitFor(() => seen.some(([event]) => event === "jobCompleted"), { timeoutMs: 5000, what: "jobCompleted" });
    expect(seen.filter(([event]) => event !== "jobDeferred").map(([event, p]) => [event, p.attempt])).toEqual([
      ["jobStarted", 1],
      ["jobCompleted", 1],
    ]);
  });

  it("cannot fail a job when the pool is told 5 slots for a worker serving 2", async () => {
    const worker = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", slots: 2 });
    cleanups.push(() => worker.stop());
    const { pool, client, seen } = await orchestrator();
    pool.add({ id: "w", transport: new GrpcTransport({ address: worker.address }), slots: 5 });
    const handles = await Promise.all(Array.from({ length: 6 }, () => client.submit({ type: "stubborn", payload: { ms: 150 }, maxAttempts: 1 })));
    for (const handle of handles) expect(await handle.result({ timeoutMs: 20_000 })).toEqual({ ran: 150 });
    expect(pool.get("w")?.slots).toBe(2);
    expect(seen.filter(([event]) => event === "jobFailed" || event === "jobRetrying")).toEqual([]);
    const stats = await (await client.submit({ type: "concurrency", payload: {} })).result({ timeoutMs: 10_000 });
    expect(stats).toMatchObject({ max: 2 });
  });

  it("skips a worker whose slots are all held by handlers that ignore their signal, and runs new jobs elsewhere", async () => {
    const stuck = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", slots: 1 });
    const other = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", slots: 1 });
    cleanups.push(() => stuck.stop(), () => other.stop());
    const { pool, client, seen } = await orchestrator();
    pool.add({ id: "stuck", transport: new GrpcTransport({ address: stuck.address }) });
    await waitFor(() => pool.get("stuck")?.state === "idle", { timeoutMs: 10_000, what: "the first worker admitted" });
    // Runs 30 s, ignoring the abort at its 300 ms timeout: the worker's only slot stays held.
    const ignoring = await client.submit({ type: "stubborn", payload: { ms: 30_000 }, timeoutMs: 300, maxAttempts: 1 });
    await expect(ignoring.result({ timeoutMs: 10_000 })).rejects.toMatchObject({ code: "deadline_exceeded" });
    await waitFor(() => pool.get("stuck")?.state === "saturated", { timeoutMs: 10_000, what: "the worker saturated" });
    expect(pool.get("stuck")).toMatchObject({ stuckSlots: 1, reason: expect.stringContaining("held by handlers that were aborted and have not returned") });
    pool.add({ id: "other", transport: new GrpcTransport({ address: other.address }) });
    const next = await Promise.all([1, 2, 3].map(() => client.submit({ type: "echo", payload: "elsewhere" })));
    for (const handle of next) expect(await handle.result({ timeoutMs: 10_000 })).toBe("elsewhere");
    await waitFor(() => seen.filter(([event]) => event === "jobCompleted").length === 3, { timeoutMs: 5000, what: "three jobCompleted" });
    const ranOn = seen.filter(([event]) => event === "jobCompleted").map(([, p]) => p.workerId);
    expect(ranOn).toEqual(["other", "other", "other"]);
  });
});
