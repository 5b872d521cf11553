import { afterEach, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { OrchestratorError } from "../../src/errors.ts";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandle } from "../../src/client/job-handle.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

/** Jobs hold (their first attempt) until released by name; the log records starts and ends in order. */
function gatedHandlers() {
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  const started = new Map<string, () => void>();
  const startedPromises = new Map<string, Promise<void>>();
  const onStart = (name: string) => {
    if (!startedPromises.has(name)) startedPromises.set(name, new Promise((resolve) => started.set(name, resolve)));
    return startedPromises.get(name) as Promise<void>;
  };
  const handlers = {
    step: async (payload: { name: string; hold?: boolean }, ctx: JobContext): Promise<string> => {
      log.push(`start ${payload.name}`);
      void onStart(payload.name);
      started.get(payload.name)?.();
      try {
        if (payload.hold === true && ctx.attempt === 1) {
          await new Promise<void>((resolve, reject) => {
            gates.set(payload.name, resolve);
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
          });
        } else {
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      } finally {
        log.push(`end ${payload.name}`);
      }
      return payload.name;
    },
  };
  return {
    log,
    handlers,
    /** Resolves once the job named `name` started on a worker. */
    started: (name: string) => onStart(name),
    release: (name: string) => gates.get(name)?.(),
  };
}

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function setup(options: { slots?: number; dispatchers?: number; store?: boolean } = {}) {
  const queue = new MemoryQueue();
  const gated = gatedHandlers();
  const store = options.store === true ? new MemoryJobStore() : undefined;
  const dispatchers: Dispatcher[] = [];
  for (let i = 0; i < (options.dispatchers ?? 1); i++) {
    const pool = new WorkerPool();
    const slots = options.slots ?? 4;
    pool.add({ id: `w${i}`, transport: new InProcessTransport({ handlers: gated.handlers, slots }), slots });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, ...(store === undefined ? {} : { store }) });
    cleanups.push(() => pool.close());
    cleanups.push(() => dispatcher.close({ signal: AbortSignal.timeout(2000) }));
    await dispatcher.start();
    dispatchers.push(dispatcher);
  }
  const client = new JobClient<{ step: { payload: { name: string; hold?: boolean }; result: string } }>({
    queue, events: queue, ...(store === undefined ? {} : { store }),
  });
  cleanups.push(() => client.close());
  cleanups.push(() => queue.close());
  return { queue, client, dispatchers, ...gated };
}

/** Whether two jobs in `log` (start/end lines) ever overlapped. */
function overlaps(log: readonly string[], names: readonly string[]): boolean {
  let running = 0;
  for (const line of log) {
    const [kind, name] = line.split(" ") as [string, string];
    if (!names.includes(name)) continue;
    running += kind === "start" ? 1 : -1;
    if (running > 1) return true;
  }
  return false;
}

const canceledMessage = (handle: Pick<JobHandle<string>, "result">) =>
  handle.result().then(
    () => "completed",
    (error: unknown) => (error instanceof OrchestratorError ? `${error.code}: ${error.message}` : String(error)),
  );

describe("concurrency keys on MemoryQueue", () => {
  it("runs the jobs of a key of limit 1 one at a time, in submit order, with free slots to spare", async () => {
    const { client, log } = await setup({ slots: 4 });
    const names = ["a", "b", "c", "d", "e"];
    const handles = [];
    for (const name of names) handles.push(await client.submit({ type: "step", payload: { name }, concurrency: { key: "env:prod" } }));
    expect(await Promise.all(handles.map((h) => h.result()))).toEqual(names);
    expect(overlaps(log, names)).toBe(false);
    expect(log.filter((l) => l.startsWith("start"))).toEqual(names.map((n) => `start ${n}`));
  });

  it("holds at most `limit` jobs of a key across two dispatchers", async () => {
    const { client, log } = await setup({ slots: 4, dispatchers: 2 });
    const names = Array.from({ length: 12 }, (_, i) => `j${i}`);
    const handles = [];
    for (const name of names) handles.push(await client.submit({ type: "step", payload: { name }, concurrency: { key: "deploy", limit: 2 } }));
    await Promise.all(handles.map((h) => h.result()));
    let running = 0;
    let peak = 0;
    for (const line of log) {
      running += line.startsWith("start") ? 1 : -1;
      peak = Math.max(peak, running);
    }
    expect(peak).toBe(2);
  });

  it("keeps waiting jobs out of the prefetch and off the workers: other jobs run while 50 wait on a busy key", async () => {
    const { client, queue, started, release, dispatchers } = await setup({ slots: 2 });
    const holder = await client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "busy" } });
    await started("holder");
    const waiting: Array<JobHandle<string>> = [];
    for (let i = 0; i < 50; i++) waiting.push(await client.submit({ type: "step", payload: { name: `w${i}` }, concurrency: { key: "busy" } }));
    await expect.poll(() => queue.info().waitingForKeys).toBe(50);
    expect(waiting[49]?.state).toBe("queued");
    await expect.poll(() => waiting[49]?.reason).toContain('waiting for concurrency key "busy"');
    // One slot is busy with the holder; the other takes an unkeyed job and another key's job.
    const plain = await client.submit({ type: "step", payload: { name: "plain" } });
    const other = await client.submit({ type: "step", payload: { name: "other" }, concurrency: { key: "quiet" } });
    expect(await plain.result()).toBe("plain");
    expect(await other.result()).toBe("other");
    expect(holder.state).toBe("running");
    expect(dispatchers[0]?.running).toBe(1);
    release("holder");
    expect(await holder.result()).toBe("holder");
    await Promise.all(waiting.map((h) => h.result()));
    expect(queue.info().waitingForKeys).toBe(0);
  });

  it("drop_newest: a job arriving while its key is full finishes cancelled, saying why", async () => {
    const { client, started, release, log, dispatchers } = await setup();
    const first = await client.submit({ type: "step", payload: { name: "first", hold: true }, concurrency: { key: "k", strategy: "drop_newest" } });
    await started("first");
    const second = await client.submit({ type: "step", payload: { name: "second" }, concurrency: { key: "k", strategy: "drop_newest" } });
    expect(await canceledMessage(second)).toMatch(/^canceled: .*dropped: concurrency key "k" was at its limit of 1 \(strategy drop_newest\)/);
    expect(second.state).toBe("cancelled");
    expect(second.outcome).toMatchObject({ status: "cancelled", reason: "requested" });
    release("first");
    expect(await first.result()).toBe("first");
    expect(log).not.toContain("start second");
    // The key is held until first's delivery is settled, a step after its result is published.
    await dispatchers[0]?.onIdle();
    // The key is free again: the next one runs.
    const third = await client.submit({ type: "step", payload: { name: "third" }, concurrency: { key: "k", strategy: "drop_newest" } });
    expect(await third.result()).toBe("third");
  });

  it("cancel_running: the newest job cancels the one holding the key and takes its place", async () => {
    const { client, started, log } = await setup();
    const old = await client.submit({ type: "step", payload: { name: "old", hold: true }, concurrency: { key: "k", strategy: "cancel_running" } });
    await started("old");
    const newer = await client.submit({ type: "step", payload: { name: "new" }, concurrency: { key: "k", strategy: "cancel_running" } });
    expect(await canceledMessage(old)).toMatch(new RegExp(`superseded by job ${newer.id} on concurrency key "k" \\(strategy cancel_running\\)`));
    expect(await newer.result()).toBe("new");
    // The newer job started only after the old one had ended.
    expect(log.indexOf("start new")).toBeGreaterThan(log.indexOf("end old"));
  });

  it("frees a dispatcher's places when it stops holding them: its waiting jobs proceed on another", async () => {
    const { client, started, dispatchers, log } = await setup({ dispatchers: 2 });
    const [d0, d1] = dispatchers as [Dispatcher, Dispatcher];
    const holder = await client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "k" } });
    await started("holder");
    const holderDispatcher = d0.running === 1 ? d0 : d1;
    const rest = [];
    for (const name of ["x", "y"]) rest.push(await client.submit({ type: "step", payload: { name }, concurrency: { key: "k" } }));
    // A forced close leaves the holder's delivery unsettled: it goes back to the head of its key's line.
    await holderDispatcher.close({ signal: AbortSignal.abort() });
    expect(await holder.result()).toBe("holder");
    expect(await Promise.all(rest.map((h) => h.result()))).toEqual(["x", "y"]);
    expect(overlaps(log, ["holder", "x", "y"])).toBe(false);
  });

  it("records why a job waits, with a store", async () => {
    const { client, started, release } = await setup({ store: true });
    const holder = await client.submit({ type: "step", payload: { name: "holder", hold: true }, concurrency: { key: "k", limit: 1 } });
    await started("holder");
    const waiter = await client.submit({ type: "step", payload: { name: "waiter" }, concurrency: { key: "k" } });
    await expect.poll(async () => (await client.get(waiter.id))?.reason).toBe('waiting for concurrency key "k" (at most 1 at once)');
    expect((await client.get(waiter.id))?.state).toBe("queued");
    release("holder");
    expect(await waiter.result()).toBe("waiter");
    expect((await client.get(waiter.id))?.reason).toBeUndefined();
    expect(await holder.result()).toBe("holder");
  });

  it.each([
    [{ key: "" }, "concurrency.key"],
    [{ key: "k", limit: 0 }, "concurrency.limit"],
    [{ key: "k", strategy: "newest" }, "concurrency.strategy"],
    [{ key: "k", max: 2 }, "concurrency.max"],
    ["env:prod", "concurrency"],
  ])("refuses the bad concurrency spec %j naming %s", async (concurrency, field) => {
    const { client } = await setup();
    const error = await client.submit({ type: "step", payload: { name: "x" }, concurrency: concurrency as never }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field } });
  });
});
