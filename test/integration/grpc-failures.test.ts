import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { cancelError, delay } from "../../src/signals.ts";
import type { AbortMarker } from "../../src/testing/contract-handlers.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { GrpcTransportOptions } from "../../src/transport/grpc/index.ts";
import type { ExecuteRequest, TransportState } from "../../src/transport/types.ts";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { grpcTestHandlersModule } from "../helpers/grpc-test-handlers.ts";
import { PingPolicyProxy } from "../helpers/ping-policy-proxy.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";
import type { WorkerProcess, WorkerProcessOptions } from "../helpers/worker-process.ts";

const cleanups: Array<() => Promise<void>> = [];
let markers: string;

beforeAll(async () => {
  markers = await mkdtemp(join(tmpdir(), "blacktree-grpc-failures-"));
});
afterAll(() => rm(markers, { recursive: true, force: true }));
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(workerOptions: WorkerProcessOptions = {}, transportOptions: Partial<GrpcTransportOptions> = {}) {
  const worker = await startWorker(workerOptions);
  const { transport, states } = await watchedTransport({ address: worker.address, ...transportOptions });
  return { worker, transport, states };
}

async function startWorker(options: WorkerProcessOptions) {
  const worker = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", ...options });
  cleanups.push(() => worker.stop());
  return worker;
}

/** A transport whose `watch` states are recorded, once its session is ready. */
async function watchedTransport(options: GrpcTransportOptions) {
  const transport = new GrpcTransport(options);
  cleanups.push(() => transport.close());
  const states: TransportState[] = [];
  transport.watch((state) => states.push(state));
  await waitFor(() => states.includes("ready") || undefined, { timeoutMs: 5000, what: "session ready" });
  return { transport, states };
}

function request(type: string, payload: unknown, extra: Partial<ExecuteRequest> = {}): ExecuteRequest {
  return { jobId: randomUUID(), type, payload, attempt: 1, deadline: Date.now() + 30_000, ...extra };
}

/** Starts a call; `started` resolves at its first event; `settled` records when and how it ended. */
function run(transport: GrpcTransport, req: ExecuteRequest, signal = new AbortController().signal) {
  const events: WorkerJobEvent[] = [];
  let markStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  const result = transport.execute(req, { signal, onEvent: (event) => (events.push(event), markStarted()) });
  const settled = result.then(
    (value) => ({ ok: true as const, value, at: Date.now() }),
    (error: unknown) => ({ ok: false as const, error: OrchestratorError.from(error), at: Date.now() }),
  );
  return { events, started, settled };
}

/**
 * Once a new session is ready and has run a job (so the worker has read all it had buffered
 * before), the worker is shut down gracefully (SIGTERM: it would still start what it holds) and
 * has exited: only then can "the `markStart` handler writing `path` never started" be judged,
 * with nothing left that could start it later (no "nothing happened after a sleep").
 */
async function expectNeverStarted(path: string, transport: GrpcTransport, states: TransportState[], worker: WorkerProcess): Promise<void> {
  await waitFor(() => states.at(-1) === "ready" || undefined, { timeoutMs: 5000, what: "reconnected session" });
  expect(await run(transport, request("echo", 1)).settled).toMatchObject({ ok: true, value: 1 });
  worker.kill("SIGTERM");
  expect(await worker.exited).toEqual({ code: 0, signal: null });
  expect(existsSync(path)).toBe(false);
}

async function marker(path: string): Promise<AbortMarker> {
  return waitFor(async () => JSON.parse(await readFile(path, "utf8")) as AbortMarker, { timeoutMs: 5000, what: `marker ${path}` });
}

describe("GrpcTransport against worker processes that fail", () => {
  it("rejects every job in flight with worker_lost as soon as a SIGKILL closes the connection, and watch reports lost", async () => {
    // Pings every 30 s and given up after 10 minutes: within this test only the closed
    // connection can end the calls, so their ending proves it is noticed (no wall-clock bound).
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 30_000, pingTimeoutMs: 600_000 });
    const calls = [run(transport, request("waitForAbort", {})), run(transport, request("waitForAbort", {}))];
    await Promise.all(calls.map((call) => call.started));
    worker.kill("SIGKILL");
    for (const call of calls) {
      const outcome = await call.settled;
      expect(outcome.ok).toBe(false);
      if (!outcome.ok) expect(outcome.error.code).toBe("worker_lost");
      if (!outcome.ok) expect(outcome.error.message).not.toMatch(/did not answer a ping/);
    }
    expect(states).toEqual(["ready", "lost"]);
    expect(await worker.exited).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("vouches for the worker from its pongs: serving, not_serving once it begins shutting down (as Check says), nothing once the session is lost", async () => {
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 50, pingTimeoutMs: 1000 });
    expect(await waitFor(() => transport.vouchedHealth(), { timeoutMs: 5000, what: "a pong" })).toBe("serving");
    const call = run(transport, request("waitForAbort", {}));
    await call.started;
    // The running job holds the worker in its grace period: it serves no new jobs meanwhile.
    worker.kill("SIGTERM");
    await waitFor(() => transport.vouchedHealth() === "not_serving" || undefined, { timeoutMs: 5000, what: "a not_serving pong" });
    expect(await transport.check({ timeoutMs: 2000 })).toBe("not_serving");
    worker.kill("SIGKILL");
    expect(await call.settled).toMatchObject({ ok: false, error: { code: "worker_lost" } });
    expect(states).toEqual(["ready", "lost"]);
    expect(transport.vouchedHealth()).toBeUndefined();
  });

  it("learns at once that a worker began shutting down, on a session that has not pinged yet", async () => {
    const worker = await startWorker({ slots: 2 });
    // This session pings every 10 s: within this test only the worker's own Pong can tell it.
    const { transport: quiet } = await watchedTransport({ address: worker.address, pingIntervalMs: 10_000, pingTimeoutMs: 600_000 });
    const { transport: busy } = await watchedTransport({ address: worker.address });
    const call = run(busy, request("waitForAbort", {}));
    await call.started;
    expect(quiet.vouchedHealth()).toBeUndefined();
    // The running job holds the worker in its grace period, its sessions open.
    worker.kill("SIGTERM");
    await waitFor(() => quiet.vouchedHealth() === "not_serving" || undefined, { timeoutMs: 5000, what: "a not_serving pong on the quiet session" });
    worker.kill("SIGKILL");
    expect(await call.settled).toMatchObject({ ok: false, error: { code: "worker_lost" } });
  });

  it("reports a worker it cannot reach as lost and fails jobs with unavailable, then ready once the worker is up", async () => {
    const worker = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers" });
    const port = worker.port;
    await worker.stop();
    const transport = new GrpcTransport({ address: `127.0.0.1:${port}`, reconnect: { baseDelayMs: 50, maxDelayMs: 200 } });
    cleanups.push(() => transport.close());
    const states: TransportState[] = [];
    transport.watch((state) => states.push(state));
    await waitFor(() => states.includes("lost") || undefined, { timeoutMs: 5000, what: "lost" });
    expect(await run(transport, request("echo", 1)).settled).toMatchObject({ ok: false, error: { code: "unavailable" } });
    const again = await startWorkerProcess({ handlersModule: grpcTestHandlersModule, handlersExport: "grpcTestHandlers", port });
    cleanups.push(() => again.stop());
    await waitFor(() => states.at(-1) === "ready" || undefined, { timeoutMs: 5000, what: "ready" });
    expect(states).toEqual(["lost", "ready"]);
    const after = await run(transport, request("echo", 2)).settled;
    expect(after).toMatchObject({ ok: true, value: 2 });
  });

  it("catches a frozen worker by pings and health timeout, and ignores what it sends for the old attempt after it thaws", async () => {
    // HTTP/2 keepalive pings every 30 s: the session's own pings must be what catches it.
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 100, pingTimeoutMs: 400, keepaliveTimeMs: 30_000 });
    const path = join(markers, `${randomUUID()}.json`);
    const jobId = randomUUID();
    const first = run(transport, request("waitForAbort", { marker: path }, { jobId }));
    await first.started;
    worker.freeze();
    // The health endpoint shares the frozen process: the check times out instead of answering.
    await expect(transport.check({ timeoutMs: 300 })).rejects.toMatchObject({ code: "deadline_exceeded" });
    const lost = await first.settled;
    expect(lost.ok).toBe(false);
    // Caught by the session's pings (the connection stays open while frozen), not a wall-clock bound.
    if (!lost.ok) expect(lost.error).toMatchObject({ code: "worker_lost", message: expect.stringMatching(/did not answer a ping within 400 ms/) });
    expect(states).toEqual(["ready", "lost"]);
    const eventsWhenLost = first.events.length;

    worker.thaw();
    // Once thawed, the worker learns its session is gone and aborts the old attempt itself.
    expect(await marker(path)).toMatchObject({ jobId, code: "worker_lost", reason: "worker_lost" });
    await waitFor(() => states.at(-1) === "ready" || undefined, { timeoutMs: 5000, what: "reconnected session" });
    expect(await transport.check({ timeoutMs: 2000 })).toBe("serving");
    // The next attempt of the same job runs on a fresh session and gets its own result.
    const second = run(transport, request("context", null, { jobId, attempt: 2 }));
    const outcome = await second.settled;
    expect(outcome).toMatchObject({ ok: true, value: { jobId, attempt: 2 } });
    expect(first.events.length).toBe(eventsWhenLost);
    expect(await first.settled).toBe(lost);
  });

  it("catches a frozen idle worker by the connection's keepalive pings, then runs jobs on it once it thaws", async () => {
    // The session pings every 30 s and gives up after 10 minutes: within this test only the
    // HTTP/2 keepalive (every 100 ms, 400 ms to answer) can notice a frozen worker that ran nothing.
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 30_000, pingTimeoutMs: 600_000, keepaliveTimeMs: 100, keepaliveTimeoutMs: 400 });
    expect(await run(transport, request("echo", 1)).settled).toMatchObject({ ok: true, value: 1 });
    worker.freeze();
    await waitFor(() => states.includes("lost") || undefined, { timeoutMs: 10_000, what: "lost" });
    expect(transport.vouchedHealth()).toBeUndefined();
    worker.thaw();
    await waitFor(() => states.at(-1) === "ready" || undefined, { timeoutMs: 5000, what: "reconnected session" });
    expect(states).toEqual(["ready", "lost", "ready"]);
    expect(await run(transport, request("echo", 2)).settled).toMatchObject({ ok: true, value: 2 });
  });

  it("evicts a frozen idle worker from its pool, then takes it back once it thaws", async () => {
    const worker = await startWorker({ slots: 2 });
    const pool = new WorkerPool();
    const monitor = new HealthMonitor({ target: pool, intervalMs: 100 });
    cleanups.push(() => pool.close(), () => monitor.close());
    const changes: string[] = [];
    pool.on("workerStateChanged", ({ to }) => changes.push(to));
    pool.add({ id: "w", transport: new GrpcTransport({ address: worker.address, pingIntervalMs: 100, pingTimeoutMs: 400 }), slots: 2 });
    monitor.start();
    await waitFor(() => pool.get("w")?.state === "idle" || undefined, { timeoutMs: 5000, what: "admitted" });
    // Idle past pingTimeoutMs: its session pings every tenth period, its connection every period.
    await delay(1000);
    worker.freeze();
    await waitFor(() => pool.get("w")?.state === "unhealthy" || undefined, { timeoutMs: 10_000, what: "unhealthy" });
    worker.thaw();
    await waitFor(() => pool.get("w")?.state === "idle" || undefined, { timeoutMs: 10_000, what: "healthy again" });
    expect(changes.slice(changes.indexOf("idle"))).toEqual(["idle", "unhealthy", "idle"]);
  });

  it("pings every period on the session once the worker refuses the keepalive with too_many_pings, and logs the fix once", async () => {
    // A worker whose ping policy (gRPC-Go's, C-core's, strikes as theirs) refuses PINGs less than
    // 10 s apart with no data sent back in between: the default keepalive (every ping period) breaks it.
    const worker = await startWorker({ slots: 1 });
    const proxy = await PingPolicyProxy.start({ port: worker.port, minTimeMs: 10_000 });
    cleanups.push(() => proxy.close());
    const errors: string[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (_fields: object, message: string) => void errors.push(message) };
    const { transport, states } = await watchedTransport({ address: proxy.address, pingIntervalMs: 100, pingTimeoutMs: 1000, logger });
    // Idle past pingTimeoutMs, the session pings every tenth period: the PINGs between are strikes.
    await waitFor(() => (proxy.goaways === 1 && states.at(-1) === "ready") || undefined, { timeoutMs: 15_000, what: "refused, then reconnected" });
    // grpc-js now sends a PING every other period; the session's Pong before each resets the
    // strikes, where a session still pinging every tenth period would be refused again.
    const pings = proxy.pings;
    await waitFor(() => proxy.pings >= pings + 20 || undefined, { timeoutMs: 20_000, what: "20 more keepalive PINGs" });
    expect(proxy.goaways).toBe(1);
    expect(states).toEqual(["ready", "lost", "ready"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/refused the connection's keepalive pings .*too_many_pings.*keepaliveTimeMs: 30000/);
    expect(await run(transport, request("echo", 1)).settled).toMatchObject({ ok: true, value: 1 });
  });

  it("runs a job sent to a session that went quiet, with every ping answered in time", async () => {
    // Idle past pingTimeoutMs, the session pings every tenth period: the worker counts the gap as
    // a stall and holds the job for one round trip (AssignGate), which the session provides at once.
    const { transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 100, pingTimeoutMs: 400 });
    await delay(1500);
    for (let i = 0; i < 2; i++) {
      expect(await run(transport, request("echo", i)).settled).toMatchObject({ ok: true, value: i });
      await delay(1000);
    }
    expect(states).toEqual(["ready"]);
  });

  it("never starts a job assigned to a frozen worker after the session was declared lost, with the reset buffered behind the assign", async () => {
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 100, pingTimeoutMs: 400 });
    const path = join(markers, `${randomUUID()}.json`);
    worker.freeze();
    // The assign reaches the frozen worker's socket buffer; the stream reset follows it there
    // when the pings go unanswered, so the thawed worker reads both at once.
    const stale = run(transport, request("markStart", { marker: path }));
    expect(await stale.settled).toMatchObject({ ok: false, error: { code: "worker_lost" } });
    worker.thaw();
    await expectNeverStarted(path, transport, states, worker);
  });

  it("never starts a job assigned to a frozen worker after the session was declared lost, while the reset has not reached the worker", async () => {
    const worker = await startWorker({ slots: 2 });
    const proxy = await TcpProxy.start({ port: worker.port });
    cleanups.push(() => proxy.close());
    const reconnect = { baseDelayMs: 50, maxDelayMs: 200 };
    const { transport, states } = await watchedTransport({ address: `127.0.0.1:${proxy.port}`, pingIntervalMs: 100, pingTimeoutMs: 400, reconnect });
    const path = join(markers, `${randomUUID()}.json`);
    worker.freeze();
    const stale = run(transport, request("markStart", { marker: path }));
    await delay(100);
    // The assign is in the frozen worker's socket buffer; what the orchestrator sends from now
    // on, its stream reset included, is lost on the way (a partition that outlasts the freeze).
    proxy.blackhole();
    expect(await stale.settled).toMatchObject({ ok: false, error: { code: "worker_lost" } });
    worker.thaw();
    // Asked on its own connection, the worker answers once its loop runs again, the buffered assign read.
    await using direct = new GrpcTransport({ address: worker.address });
    expect(await direct.check({ timeoutMs: 5000 })).toBe("serving");
    // When the partition ends the connection drops: the worker forgets the held assign for good
    // (judged once the worker has exited: it never started, during the partition or after).
    proxy.restore();
    await expectNeverStarted(path, transport, states, worker);
  });

  it("runs a job assigned to a worker frozen for less than the ping timeout once it thaws, without losing the session", async () => {
    // Stall threshold 100 + (1500 - 100) / 2 = 800 ms: a 900 ms freeze makes the thawed worker
    // hold the assign for one ping round trip; the orchestrator never declares it lost.
    const { worker, transport, states } = await setup({ slots: 2 }, { pingIntervalMs: 100, pingTimeoutMs: 1500 });
    worker.freeze();
    const call = run(transport, request("echo", 1));
    await delay(900);
    worker.thaw();
    expect(await call.settled).toMatchObject({ ok: true, value: 1 });
    expect(states).toEqual(["ready"]);
  });

  it("never runs more handlers than slots, even when a cancelled handler is slow to return", async () => {
    const { transport } = await setup({ slots: 2 });
    for (let round = 0; round < 5; round++) {
      const controller = new AbortController();
      const cancelled = run(transport, request("stubborn", { ms: 150 }), controller.signal);
      const kept = run(transport, request("stubborn", { ms: 150 }));
      // Both handlers run on the worker (each reported its start) before the cancel.
      await Promise.all([cancelled.started, kept.started]);
      controller.abort(cancelError("requested"));
      expect(await cancelled.settled).toMatchObject({ ok: false, error: { code: "canceled" } });
      // The orchestrator sees the slot free at once; the worker holds the new job until the
      // cancelled handler really returns.
      const next = run(transport, request("stubborn", { ms: 50 }));
      const refused = run(transport, request("stubborn", { ms: 50 }));
      expect(await refused.settled).toMatchObject({ ok: false, error: { code: "resource_exhausted" } });
      expect(await next.settled).toMatchObject({ ok: true, value: { ran: 50 } });
      expect(await kept.settled).toMatchObject({ ok: true, value: { ran: 150 } });
    }
    // Every handler has returned once the worker says none runs; at no time did more than two.
    const stats = await waitFor(async () => {
      const now = (await transport.execute(request("concurrency", null), { signal: new AbortController().signal, onEvent: () => {} })) as { current: number; max: number };
      return now.current === 0 ? now : undefined;
    }, { timeoutMs: 5000, what: "the stubborn handlers to return" });
    expect(stats).toEqual({ current: 0, max: 2 });
  });

  it("on SIGTERM reports not_serving, refuses new jobs, finishes running ones and exits 0", async () => {
    const { worker, transport } = await setup({ slots: 2, gracePeriodMs: 5000 });
    const running = run(transport, request("stubborn", { ms: 600 }));
    // The job runs on the worker (it reported its start) before the SIGTERM.
    await running.started;
    worker.kill("SIGTERM");
    await waitFor(async () => ((await transport.check({ timeoutMs: 1000 })) === "not_serving") || undefined, { timeoutMs: 3000, what: "not_serving" });
    expect(await run(transport, request("echo", 1)).settled).toMatchObject({ ok: false, error: { code: "unavailable" } });
    expect(await running.settled).toMatchObject({ ok: true, value: { ran: 600 } });
    expect(await worker.exited).toEqual({ code: 0, signal: null });
  });

  it("aborts jobs still running after the grace period with reason shutdown, which the orchestrator gets as worker_lost", async () => {
    const { worker, transport } = await setup({ slots: 1, gracePeriodMs: 200 });
    const path = join(markers, `${randomUUID()}.json`);
    const running = run(transport, request("waitForAbort", { marker: path }));
    await running.started;
    worker.kill("SIGTERM");
    const outcome = await running.settled;
    expect(outcome).toMatchObject({ ok: false, error: { code: "worker_lost", retryable: true } });
    expect(await marker(path)).toMatchObject({ code: "canceled", reason: "shutdown" });
    expect(await worker.exited).toEqual({ code: 0, signal: null });
  });
});
