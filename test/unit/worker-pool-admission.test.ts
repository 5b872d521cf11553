import { describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import type { WorkerDescription } from "../../src/transport/types.ts";
import { WORKER_PROTOCOL } from "../../src/wire/protocol.ts";
import type { WorkerPoolEvents } from "../../src/worker-pool/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

/** A fake worker that announces `description` on connect, fails to connect while `down` is set, and reports stuck slots. */
class AnnouncingTransport extends FakeTransport {
  down: OrchestratorError | undefined;
  connects = 0;
  readonly #slotListeners = new Set<(stuck: number) => void>();

  readonly description: WorkerDescription;

  constructor(description: WorkerDescription) {
    super();
    this.description = description;
  }

  async connect(): Promise<WorkerDescription> {
    this.connects += 1;
    if (this.down) throw this.down;
    return this.description;
  }

  watchSlots(listener: (stuck: number) => void): () => void {
    this.#slotListeners.add(listener);
    return () => this.#slotListeners.delete(listener);
  }

  reportStuck(stuck: number): void {
    for (const listener of this.#slotListeners) listener(stuck);
  }
}

const announced = (overrides: Partial<WorkerDescription> = {}): WorkerDescription => ({
  workerId: "w-own-id",
  slots: 2,
  labels: { zone: "eu" },
  jobTypes: ["build", "test"],
  version: "1.2.3",
  protocol: WORKER_PROTOCOL,
  ...overrides,
});

function waitFor<K extends keyof WorkerPoolEvents>(pool: WorkerPool, event: K, accept: (...args: WorkerPoolEvents[K]) => boolean = () => true): Promise<WorkerPoolEvents[K][0]> {
  return new Promise((resolve) => {
    const listener = (...args: WorkerPoolEvents[K]) => {
      if (!accept(...args)) return;
      pool.off(event, listener as never);
      resolve(args[0]);
    };
    pool.on(event, listener as never);
  });
}

describe("WorkerPool admission", () => {
  it("keeps a new worker joining and unleasable until its session is open and its first check passed, then uses what it announced", async () => {
    const pool = new WorkerPool();
    const transport = new AnnouncingTransport(announced());
    transport.health = "hang";
    const admitted = waitFor(pool, "workerAdmitted");
    expect(pool.add({ id: "w1", transport }).state).toBe("joining");
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    expect(pool.capacity).toBe(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(transport.connects).toBe(1);
    // Connected, but the first check has not answered: still out.
    expect(pool.get("w1")?.state).toBe("joining");
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    expect([...pool.workerIds()]).toEqual([]);
    await pool.remove("w1");

    const ok = new AnnouncingTransport(announced());
    pool.add({ id: "w2", transport: ok });
    const { worker, description } = await Promise.race([admitted, waitFor(pool, "workerAdmitted")]);
    expect(description).toEqual(announced());
    expect(worker).toMatchObject({ id: "w2", state: "idle", slots: 2, labels: { zone: "eu" }, jobTypes: ["build", "test"], description: announced() });
    expect(pool.canRun({ type: "deploy" })).toBe(false);
    expect(pool.acquire({ type: "build", labels: { zone: "eu" } })?.workerId).toBe("w2");
    await pool.close();
  });

  it("never leases more slots than the worker announced, whatever the pool was told", async () => {
    const pool = new WorkerPool();
    pool.add({ id: "w1", transport: new AnnouncingTransport(announced({ slots: 2 })), slots: 5 });
    await waitFor(pool, "workerAdmitted");
    expect(pool.get("w1")?.slots).toBe(2);
    expect(pool.acquire({ type: "build" })).toBeDefined();
    expect(pool.acquire({ type: "build" })).toBeDefined();
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    pool.add({ id: "w2", transport: new AnnouncingTransport(announced({ slots: 8 })), slots: 3, jobTypes: ["test", "deploy"] });
    const { worker } = await waitFor(pool, "workerAdmitted");
    // Options only narrow: 3 of 8 slots, and of its job types only those the pool asked for.
    expect(worker).toMatchObject({ slots: 3, jobTypes: ["test"] });
    await pool.close();
  });

  it.each<[string, Partial<WorkerDescription>, Parameters<WorkerPool["add"]>[0] extends infer O ? Partial<O> : never, RegExp]>([
    ["another protocol", { protocol: "blacktree.orchestrator.v9" }, {}, /speaks protocol blacktree\.orchestrator\.v9/],
    ["none of the expected job types", {}, { jobTypes: ["deploy"] }, /runs none of the job types the pool expects of it \(deploy\); it runs build, test/],
    ["a different label", {}, { labels: { zone: "us" } }, /carries zone=eu, the pool expects zone=us/],
    ["a missing label", {}, { labels: { gpu: "a100" } }, /does not carry the label gpu=a100/],
  ])("keeps out a worker announcing %s, saying why in list() and events", async (_name, description, options, reason) => {
    const pool = new WorkerPool();
    const unavailable = waitFor(pool, "workerUnavailable");
    pool.add({ id: "w1", transport: new AnnouncingTransport(announced(description)), ...options });
    const event = await unavailable;
    expect(event.reason).toMatch(reason);
    expect(pool.get("w1")).toMatchObject({ state: "joining", reason: expect.stringMatching(reason) });
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    await pool.close();
  });

  it("keeps an unreachable worker out with its reason and admits it once it answers, without a health monitor", async () => {
    const pool = new WorkerPool();
    const transport = new AnnouncingTransport(announced());
    transport.down = new OrchestratorError("unavailable", "nothing listens on 127.0.0.1:9 (connection refused): is the worker running, on this port?", {
      details: { connectFailure: "refused", started: false },
    });
    const changes: Array<WorkerPoolEvents["workerStateChanged"][0]> = [];
    pool.on("workerStateChanged", (change) => changes.push(change));
    const unavailable = waitFor(pool, "workerUnavailable");
    pool.add({ id: "w1", transport });
    expect((await unavailable).error.details.connectFailure).toBe("refused");
    expect(pool.list()[0]).toMatchObject({ state: "joining", reason: expect.stringContaining("connection refused") });
    expect(changes).toContainEqual({ workerId: "w1", from: "joining", to: "joining", reason: expect.stringContaining("connection refused") });
    const admitted = waitFor(pool, "workerAdmitted");
    transport.down = undefined;
    await admitted;
    expect(pool.get("w1")).toMatchObject({ state: "idle" });
    expect(pool.get("w1")?.reason).toBeUndefined();
    await pool.close();
  });

  it("evicts a worker whose connection is lost, aborting its leases, with no health monitor running, and admits it again when it is back", async () => {
    const pool = new WorkerPool();
    const transport = new AnnouncingTransport(announced());
    pool.add({ id: "w1", transport });
    await waitFor(pool, "workerAdmitted");
    const lease = pool.acquire({ type: "build" });
    expect(lease).toBeDefined();
    transport.setState("lost");
    expect(lease?.signal.aborted).toBe(true);
    expect((lease?.signal.reason as OrchestratorError).code).toBe("worker_lost");
    expect(pool.get("w1")).toMatchObject({ state: "unhealthy", reason: "its connection was lost" });
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    lease?.release();
    const back = waitFor(pool, "workerAdmitted");
    transport.setState("ready");
    await back;
    expect(pool.get("w1")?.state).toBe("idle");
    await pool.close();
  });

  it("does not lease a worker whose slots are all stuck, says so, and leases it again once they return", async () => {
    const pool = new WorkerPool();
    const stuckOne = new AnnouncingTransport(announced({ slots: 2 }));
    pool.add({ id: "w1", transport: stuckOne });
    await waitFor(pool, "workerAdmitted");
    stuckOne.reportStuck(1);
    expect(pool.get("w1")).toMatchObject({ state: "idle", stuckSlots: 1 });
    expect(pool.capacity).toBe(1);
    const lease = pool.acquire({ type: "build" });
    expect(lease).toBeDefined();
    expect(pool.get("w1")?.state).toBe("saturated");
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    lease?.release();
    stuckOne.reportStuck(2);
    expect(pool.get("w1")).toMatchObject({ state: "saturated", stuckSlots: 2, reason: expect.stringContaining("2 of its 2 slots are held by handlers that were aborted and have not returned") });
    expect(pool.capacity).toBe(0);
    expect(pool.acquire({ type: "build" })).toBeUndefined();
    stuckOne.reportStuck(0);
    expect(pool.get("w1")).toMatchObject({ state: "idle" });
    expect(pool.acquire({ type: "build" })).toBeDefined();
    await pool.close();
  });

  it("admits a transport without connect() through describe() and check()", async () => {
    const pool = new WorkerPool();
    pool.add({ id: "w1", transport: new FakeTransport() });
    const { worker } = await waitFor(pool, "workerAdmitted");
    expect(worker).toMatchObject({ state: "idle", slots: 1, description: { version: "fake" } });
    expect(worker.jobTypes).toBeUndefined();
    await pool.close();
  });

  it("refuses an unknown admission mode with invalid_argument", () => {
    const pool = new WorkerPool();
    expect(() => pool.add({ id: "w1", transport: new FakeTransport(), admission: "maybe" as never })).toThrow(
      expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("admission") }),
    );
  });
});
