import { afterEach, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

function setup(options: { storePollIntervalMs?: number } = {}) {
  const queue = new MemoryQueue();
  const store = new MemoryJobStore();
  const client = (): JobClient => {
    const c = new JobClient({ queue, events: queue, store, ...options });
    closers.push(() => c.close());
    return c;
  };
  closers.push(() => queue.close());
  return { queue, store, client };
}

describe("JobClient with a job store", () => {
  it("creates the job's record before queueing it, with its metadata and start timeout", async () => {
    const { queue, store, client } = setup();
    const handle = await client().submit({ type: "build", payload: { tag: "a" }, metadata: { tenant: "t1" }, startTimeoutMs: 60_000 });
    expect(await store.get(handle.id)).toMatchObject({ state: "queued", type: "build", metadata: { tenant: "t1" }, startTimeoutMs: 60_000 });
    expect(queue.info().ready).toBe(1);
  });

  it("gives one job for one idempotency key across clients of one store", async () => {
    const { queue, client } = setup();
    const [a, b] = [client(), client()];
    const handles = await Promise.all([a.submit({ type: "build", payload: 1, idempotencyKey: "k" }), b.submit({ type: "build", payload: 2, idempotencyKey: "k" })]);
    expect(handles[0].id).toBe(handles[1].id);
    expect(queue.info().ready).toBe(1);
    const other = await rejectionOf(b.submit({ type: "deploy", payload: 1, idempotencyKey: "k" }));
    expect(other.code).toBe("invalid_argument");
    expect(other.message).toContain('"build" job');
  });

  it("get() of a finished job gives its state, result and attempts, and result() resolves at once", async () => {
    const { store, client } = setup();
    const handle = await client().submit({ type: "build", payload: 1 });
    await store.record({ kind: "started", jobId: handle.id, attempt: 1, fencingToken: 1, workerId: "w1", at: Date.now() });
    await store.record({ kind: "finished", jobId: handle.id, attempt: 1, fencingToken: 1, started: true, at: Date.now(), outcome: { status: "completed", result: { ok: 1 } } });
    const later = client();
    const got = await later.get(handle.id);
    expect(got?.state).toBe("completed");
    expect(got?.attempts).toMatchObject([{ number: 1, workerId: "w1", outcome: "completed" }]);
    expect(await got?.result()).toEqual({ ok: 1 });
    expect(later.pending).toBe(0);
  });

  it("get() of an unfinished job settles on its result event", async () => {
    const { queue, client } = setup();
    const handle = await client().submit({ type: "build", payload: 1 });
    const got = await client().get(handle.id);
    expect(got?.state).toBe("queued");
    await queue.publish({ kind: "state", state: "unschedulable", jobId: handle.id, attempt: 1, at: Date.now(), reason: "no worker serves job type `build`" });
    await waitFor(() => got?.state === "unschedulable");
    expect(got?.reason).toBe("no worker serves job type `build`");
    await queue.publish({ kind: "result", jobId: handle.id, attempt: 1, at: Date.now(), outcome: { status: "completed", result: 7 } });
    expect(await got?.result()).toBe(7);
  });

  it("get() settles from the record when the result event was missed", async () => {
    const { store, client } = setup({ storePollIntervalMs: 20 });
    const handle = await client().submit({ type: "build", payload: 1 });
    const got = await client().get(handle.id);
    // Recorded, never published: only reading the record again can tell.
    await store.record({ kind: "finished", jobId: handle.id, attempt: 1, fencingToken: 1, started: false, at: Date.now(), outcome: { status: "cancelled", reason: "requested" } });
    expect((await rejectionOf(got?.result() ?? Promise.resolve())).code).toBe("canceled");
  });

  it("get() returns undefined for an unknown job, and rejects without a store", async () => {
    const { queue, client } = setup();
    expect(await client().get("nope")).toBeUndefined();
    const bare = new JobClient({ queue, events: queue });
    closers.push(() => bare.close());
    expect((await rejectionOf(bare.get("x"))).code).toBe("precondition_failed");
    expect((await rejectionOf(bare.list())).code).toBe("precondition_failed");
  });

  it("fails a job that did not start within its start timeout, even with no dispatcher", async () => {
    const { client } = setup({ storePollIntervalMs: 20 });
    const handle = await client().submit({ type: "nobody-runs-this", payload: 1, startTimeoutMs: 50 });
    const error = await rejectionOf(handle.result());
    expect(error.code).toBe("deadline_exceeded");
    expect(error.details).toMatchObject({ reason: "start_timeout", startTimeoutMs: 50 });
    expect(handle.state).toBe("failed");
  });

  it("lists, counts and lists dead letters", async () => {
    const { store, client } = setup();
    const c = client();
    const a = await c.submit({ type: "build", payload: 1, metadata: { team: "x" } });
    await c.submit({ type: "deploy", payload: 1 });
    await store.record({
      kind: "finished", jobId: a.id, attempt: 1, fencingToken: 1, started: true, at: Date.now(), deadLetter: "handler_failed: boom",
      outcome: { status: "failed", error: { code: "handler_failed", message: "boom", retryable: false } },
    });
    expect((await c.list({ metadata: { team: "x" } })).records.map((r) => r.id)).toEqual([a.id]);
    expect(await c.counts()).toMatchObject({ queued: 1, failed: 1 });
    const dead = await c.deadLetters();
    expect(dead.records.map((r) => [r.id, r.deadLetter?.reason])).toEqual([[a.id, "handler_failed: boom"]]);
  });
});
