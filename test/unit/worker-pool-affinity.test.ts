import { describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import type { JobRequirements, Lease, WorkerOptions } from "../../src/worker-pool/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { FakeTransport } from "../helpers/fake-transport.ts";

function poolWith(...workers: Array<Omit<WorkerOptions, "transport">>): WorkerPool {
  const pool = new WorkerPool();
  for (const worker of workers) pool.add({ admission: "trust", ...worker, transport: new FakeTransport() });
  return pool;
}

function take(pool: WorkerPool, job: JobRequirements): Lease {
  const lease = pool.acquire(job);
  if (!lease) throw new Error(`no lease for ${JSON.stringify(job)}`);
  return lease;
}

const warm = { cache: { value: "warm", weight: 10 } };

describe("WorkerPool preferred labels", () => {
  it("leases the free worker whose preferred labels weigh most, then falls back by weight", () => {
    const pool = poolWith(
      { id: "plain", labels: { arch: "arm64" } },
      { id: "ssd", labels: { arch: "arm64", disk: "ssd" } },
      { id: "warm", labels: { arch: "arm64", cache: "warm" } },
      { id: "both", labels: { arch: "arm64", cache: "warm", disk: "ssd" } },
    );
    const job = { type: "build", labels: { arch: "arm64" }, preferred: { ...warm, disk: { value: "ssd", weight: 3 } } };
    expect([take(pool, job), take(pool, job), take(pool, job), take(pool, job)].map((lease) => lease.workerId)).toEqual(["both", "warm", "ssd", "plain"]);
    expect(pool.acquire(job)).toBeUndefined();
  });

  it("goes back to the best worker once its slot is free again, whatever the lease order", () => {
    const pool = poolWith({ id: "cold-1" }, { id: "cold-2" }, { id: "warm", labels: { cache: "warm" } });
    const job = { type: "build", preferred: warm };
    const first = take(pool, job);
    expect(first.workerId).toBe("warm");
    expect(take(pool, job).workerId).toBe("cold-1");
    first.release();
    // Free now: cold-2, never leased, and warm, just leased: the score decides, not the lease order.
    expect(take(pool, job).workerId).toBe("warm");
    expect(take(pool, job).workerId).toBe("cold-2");
  });

  it("breaks ties between equal scores by least recent lease", () => {
    const pool = poolWith({ id: "a", labels: { cache: "warm" }, slots: 2 }, { id: "b", labels: { cache: "warm" }, slots: 2 });
    const job = { type: "build", preferred: warm };
    expect([take(pool, job), take(pool, job), take(pool, job)].map((lease) => lease.workerId)).toEqual(["a", "b", "a"]);
  });

  it("counts a preferred label only with the same value, and never filters on it", () => {
    const pool = poolWith({ id: "cold", labels: { cache: "cold" } });
    const lease = take(pool, { type: "build", preferred: warm });
    expect(lease.workerId).toBe("cold");
    expect(pool.canRun({ type: "build", preferred: warm })).toBe(true);
  });

  it("keeps jobs with and without preferences on their own orders over the same workers", () => {
    const pool = poolWith({ id: "warm", labels: { cache: "warm" } }, { id: "cold" });
    // Without preferences: least recently leased first (warm was added first).
    const plain = take(pool, { type: "build" });
    expect(plain.workerId).toBe("warm");
    expect(take(pool, { type: "build", preferred: warm }).workerId).toBe("cold");
    plain.release();
    expect(take(pool, { type: "build", preferred: warm }).workerId).toBe("warm");
  });

  it("refuses malformed preferences with invalid_argument naming the field", () => {
    const pool = poolWith({ id: "w" });
    const bad = (preferred: unknown) => () => pool.acquire({ type: "build", preferred } as JobRequirements);
    expect(bad({ cache: { value: 1 } })).toThrow(/job\.preferred\.cache\.value/);
    expect(bad({ cache: { value: "warm", weight: 0 } })).toThrow(/job\.preferred\.cache\.weight/);
    expect(bad({ cache: { value: "warm", weight: 101 } })).toThrow(OrchestratorError);
    expect(bad("warm")).toThrow(/job\.preferred/);
  });
});

describe("WorkerPool sticky worker", () => {
  it("soft: leases the named worker when it has a free slot, else the usual choice", () => {
    const pool = poolWith({ id: "a" }, { id: "b" }, { id: "c", labels: { cache: "warm" } });
    const sticky = { type: "build", preferred: warm, worker: { id: "b" } };
    const first = take(pool, sticky);
    expect(first.workerId).toBe("b");
    // b is busy: the best other worker.
    expect(take(pool, sticky).workerId).toBe("c");
    first.release();
    expect(take(pool, sticky).workerId).toBe("b");
  });

  it("soft: ignores a named worker that does not qualify or is not in the pool", () => {
    const pool = poolWith({ id: "x86", labels: { arch: "x86" } }, { id: "arm", labels: { arch: "arm64" } });
    expect(take(pool, { type: "build", labels: { arch: "arm64" }, worker: { id: "x86" } }).workerId).toBe("arm");
    expect(take(pool, { type: "build", worker: { id: "gone" } }).workerId).toBe("x86");
  });

  it("hard: leases only the named worker and waits for its slot, not for another's", async () => {
    const pool = poolWith({ id: "a" }, { id: "b" });
    const hard = { type: "build", worker: { id: "b", required: true } };
    const held = take(pool, hard);
    expect(held.workerId).toBe("b");
    expect(pool.acquire(hard)).toBeUndefined();
    const order: string[] = [];
    const waiting = pool.onAvailable(hard).then(() => order.push("b free"));
    const other = take(pool, { type: "build" });
    expect(other.workerId).toBe("a");
    other.release();
    await new Promise((resolve) => setImmediate(resolve));
    order.push("a released");
    held.release();
    await waiting;
    expect(order).toEqual(["a released", "b free"]);
    expect(take(pool, hard).workerId).toBe("b");
  });

  it("hard: canRun tells whether the named worker is in the pool and qualifies", async () => {
    const pool = poolWith({ id: "a", labels: { arch: "arm64" } }, { id: "b" });
    expect(pool.canRun({ type: "build", worker: { id: "a", required: true } })).toBe(true);
    expect(pool.canRun({ type: "build", labels: { arch: "arm64" }, worker: { id: "b", required: true } })).toBe(false);
    expect(pool.canRun({ type: "build", worker: { id: "gone", required: true } })).toBe(false);
    expect(pool.canRun({ type: "build", worker: { id: "gone" } })).toBe(true);
    await pool.remove("a");
    expect(pool.canRun({ type: "build", worker: { id: "a", required: true } })).toBe(false);
  });

  it("hard: a draining named worker gives no lease even with free slots", () => {
    const pool = poolWith({ id: "a" }, { id: "b" });
    pool.drain("b");
    expect(pool.acquire({ type: "build", worker: { id: "b", required: true } })).toBeUndefined();
    expect(pool.acquire({ type: "build", worker: { id: "b" } })?.workerId).toBe("a");
  });

  it("refuses a malformed worker with invalid_argument", () => {
    const pool = poolWith({ id: "a" });
    expect(() => pool.acquire({ type: "build", worker: { id: "" } })).toThrow(/job\.worker\.id/);
    expect(() => pool.acquire({ type: "build", worker: { id: "a", required: "yes" } } as unknown as JobRequirements)).toThrow(/job\.worker\.required/);
  });
});
