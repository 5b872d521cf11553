import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandleStateEvent } from "../../src/client/types.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { startsOf } from "../helpers/placement-handlers.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess, type WorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const handlersModule = fileURLToPath(new URL("../helpers/placement-handlers.ts", import.meta.url));
const SCHEMA = "t_affinity";

type Jobs = { stamp: { payload: { ms?: number } | null; result: { pid: number } } };

/** Worker processes serving `stamp`, one per entry, by pool id. */
async function startWorkers(specs: Record<string, Record<string, string>>, disposer: AsyncDisposableStack): Promise<Map<string, WorkerProcess>> {
  const workers = new Map<string, WorkerProcess>();
  await Promise.all(Object.entries(specs).map(async ([id, labels]) => {
    const worker = await startWorkerProcess({ handlersModule, handlersExport: "placementHandlers", labels, gracePeriodMs: 1000 });
    disposer.defer(() => worker.stop());
    workers.set(id, worker);
  }));
  return workers;
}

/** A pool of gRPC transports to `workers`, admitted. */
async function poolOf(workers: Map<string, WorkerProcess>, disposer: AsyncDisposableStack): Promise<WorkerPool> {
  const pool = new WorkerPool();
  disposer.defer(() => pool.close());
  for (const [id, worker] of workers) pool.add({ id, transport: new GrpcTransport({ address: worker.address }) });
  await waitFor(() => pool.capacity === workers.size, { timeoutMs: 15_000, what: "every worker admitted" });
  return pool;
}

/** Which worker started `jobId`, by its own log. */
function ranOn(workers: Map<string, WorkerProcess>, jobId: string): string | undefined {
  for (const [id, worker] of workers) if (startsOf(worker.output()).some(([started]) => started === jobId)) return id;
  return undefined;
}

describe.skipIf(!rabbit.available)("Affinity with gRPC worker processes", () => {
  afterAll(() => rabbit.cleanup());

  it("prefers the warm worker, sticks a key to its worker (soft and hard), and says why a job cannot be placed", async () => {
    await using disposer = new AsyncDisposableStack();
    const queueName = rabbit.queueName("affinity");
    const queue = disposer.use(new AmqpQueue({ url: rabbit.url, queueName }));
    const events = disposer.use(new AmqpEvents({ url: rabbit.url, queueName, subscriberExpiresMs: 5000 }));
    const workers = await startWorkers({ "arm-warm": { arch: "arm64", cache: "warm" }, "arm-cold": { arch: "arm64" }, x86: { arch: "x86" } }, disposer);
    const pool = await poolOf(workers, disposer);
    const dispatcher = new Dispatcher({ queue, events, pool });
    disposer.defer(() => dispatcher.close({ signal: AbortSignal.timeout(5000) }));
    await dispatcher.start();
    const client = disposer.use(new JobClient<Jobs>({ queue, events, defaults: { timeoutMs: 60_000 } }));
    const runOne = async (spec: Omit<Parameters<typeof client.submit<"stamp">>[0], "type">) => {
      const handle = await client.submit({ type: "stamp", ...spec });
      await handle.result();
      // The slot is released after the outcome is published.
      await dispatcher.onIdle();
      return handle.id;
    };

    // Preference: every arm64 job to the warm worker, though least-recently-leased would alternate.
    const preferred = [];
    for (let i = 0; i < 3; i++) {
      preferred.push(await runOne({ payload: null, labels: { arch: "arm64" }, affinity: { preferred: { cache: { value: "warm", weight: 10 } } } }));
    }
    expect(preferred.map((id) => ranOn(workers, id))).toEqual(["arm-warm", "arm-warm", "arm-warm"]);

    // Soft stickiness: the key's first job goes where the pool puts it, the next ones follow it.
    const sticky = [];
    for (let i = 0; i < 4; i++) sticky.push(await runOne({ payload: null, affinity: { stickyKey: "repo:web", sticky: "soft" } }));
    const home = ranOn(workers, sticky[0] as string) as string;
    expect(sticky.map((id) => ranOn(workers, id))).toEqual([home, home, home, home]);

    // Hard stickiness: while its worker is busy the job waits for it, though the others are free.
    const long = await client.submit({ type: "stamp", payload: { ms: 1500 }, affinity: { stickyKey: "repo:web", sticky: "hard" } });
    await waitFor(() => ranOn(workers, long.id), { timeoutMs: 10_000, what: "the long job started" });
    const hard = await client.submit({ type: "stamp", payload: null, affinity: { stickyKey: "repo:web", sticky: "hard" } });
    const free = await runOne({ payload: null });
    await hard.result();
    expect([ranOn(workers, long.id), ranOn(workers, hard.id)]).toEqual([home, home]);
    expect(ranOn(workers, free)).not.toBe(home);
    const homeStarts = startsOf(workers.get(home)?.output() ?? "").map(([id]) => id);
    expect(homeStarts.indexOf(hard.id)).toBeGreaterThan(homeStarts.indexOf(long.id));
    expect(startsOf(workers.get(ranOn(workers, free) as string)?.output() ?? "").length).toBeGreaterThan(0);
    await dispatcher.onIdle();

    // Unplaceable: no worker carries the label; the handle says so, and the start timeout ends it.
    const states: JobHandleStateEvent[] = [];
    const nowhere = await client.submit({ type: "stamp", payload: null, labels: { arch: "riscv" }, startTimeoutMs: 1500 });
    nowhere.on("state", (event) => states.push(event));
    const error = await nowhere.result().then(() => undefined, (cause: unknown) => cause);
    expect(error).toMatchObject({ code: "deadline_exceeded", details: { reason: "start_timeout" } });
    expect(states.find((event) => event.state === "unschedulable")?.reason).toBe("no worker with labels {arch: riscv} serves job type `stamp`");

    // Hard-sticky job whose worker drains: it fails at once, saying why.
    const stuck = await client.submit({ type: "stamp", payload: { ms: 1000 }, affinity: { stickyKey: "repo:web", sticky: "hard" } });
    await waitFor(() => ranOn(workers, stuck.id), { timeoutMs: 10_000, what: "the job holding the sticky worker started" });
    const orphan = await client.submit({ type: "stamp", payload: null, affinity: { stickyKey: "repo:web", sticky: "hard" } });
    await waitFor(() => dispatcher.running === 1 && !ranOn(workers, orphan.id), { timeoutMs: 5000, what: "the hard job waiting" }).catch(() => {});
    pool.drain(home);
    const gone = await orphan.result().then(() => undefined, (cause: unknown) => cause);
    expect(gone).toMatchObject({ code: "precondition_failed", details: { reason: "sticky_worker_gone", stickyKey: "repo:web", workerId: home } });
    expect(String((gone as Error).message)).toContain(`worker ${home}, which ran the previous job of sticky key \`repo:web\`, is draining`);
    await stuck.result();
    expect(ranOn(workers, orphan.id)).toBeUndefined();
  });
});

describe.skipIf(!rabbit.available || !postgres.available)("Sticky keys kept in PostgreSQL", () => {
  afterAll(async () => {
    await rabbit.cleanup();
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA}_sticky CASCADE`);
  });

  it("sends a hard-sticky job to the worker that ran its key last, as recorded by another dispatcher on its own connections", async () => {
    await using disposer = new AsyncDisposableStack();
    const queueName = rabbit.queueName("affinity-sticky");
    const workers = await startWorkers({ "w-a": {}, "w-b": {} }, disposer);
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA}_sticky CASCADE`);
    const runWith = async (order: string[], spec: { stickyKey: string }) => {
      // A dispatcher of its own each time: its own connections, store client and pool (workers
      // added in `order`, so without the store the first of them would be leased first).
      await using scope = new AsyncDisposableStack();
      const store = new PostgresJobStore({ connectionString: postgres.url, schema: `${SCHEMA}_sticky`, poolSize: 2 });
      scope.defer(() => store.close());
      await store.migrate();
      const queue = scope.use(new AmqpQueue({ url: rabbit.url, queueName }));
      const events = scope.use(new AmqpEvents({ url: rabbit.url, queueName, subscriberExpiresMs: 5000 }));
      const pool = new WorkerPool();
      scope.defer(() => pool.close());
      for (const id of order) pool.add({ id, transport: new GrpcTransport({ address: (workers.get(id) as WorkerProcess).address }) });
      await waitFor(() => pool.capacity === 2, { timeoutMs: 15_000, what: "both workers admitted" });
      const dispatcher = new Dispatcher({ queue, events, pool, store });
      scope.defer(() => dispatcher.close({ signal: AbortSignal.timeout(5000) }));
      await dispatcher.start();
      const client = scope.use(new JobClient<Jobs>({ queue, events, store, defaults: { timeoutMs: 60_000 } }));
      const handle = await client.submit({ type: "stamp", payload: null, affinity: { ...spec, sticky: "hard" } });
      await handle.result();
      await waitFor(async () => (await store.stickyWorker(spec.stickyKey)) !== undefined, { timeoutMs: 5000, what: "the sticky key recorded" });
      return handle.id;
    };
    const first = await runWith(["w-a", "w-b"], { stickyKey: "session:42" });
    const home = ranOn(workers, first) as string;
    const away = home === "w-a" ? "w-b" : "w-a";
    // The next dispatcher lists the other worker first: only the store can send the job home.
    const second = await runWith([away, home], { stickyKey: "session:42" });
    const third = await runWith([away, home], { stickyKey: "session:42" });
    expect([ranOn(workers, first), ranOn(workers, second), ranOn(workers, third)]).toEqual([home, home, home]);
    // A key not seen yet goes where the pool puts it: the first listed.
    const fresh = await runWith([away, home], { stickyKey: "session:43" });
    expect(ranOn(workers, fresh)).toBe(away);
  }, 90_000);
});

describe.skipIf(!rabbit.available || !postgres.available)("Rate limits shared by two dispatchers through PostgreSQL", () => {
  afterAll(async () => {
    await rabbit.cleanup();
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  });

  it("starts N jobs of a limited type no faster than k per interval across both dispatchers, by the workers' logs", async () => {
    await using disposer = new AsyncDisposableStack();
    const queueName = rabbit.queueName("affinity-rate");
    const limit = { max: 4, intervalMs: 1000, burst: 2 };
    const jobs = 14;
    const workers = await startWorkers({ "w-a": {}, "w-b": {} }, disposer);
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    const started: string[] = [];
    const deferred: string[] = [];
    const dispatchers = [];
    for (const [i, [id, worker]] of [...workers].entries()) {
      // Each dispatcher: its own AMQP connections, its own PostgreSQL pool, its own pool of workers.
      const store = new PostgresJobStore({ connectionString: postgres.url, schema: SCHEMA, poolSize: 2 });
      disposer.defer(() => store.close());
      if (i === 0) await store.migrate();
      const queue = disposer.use(new AmqpQueue({ url: rabbit.url, queueName }));
      const events = disposer.use(new AmqpEvents({ url: rabbit.url, queueName, subscriberExpiresMs: 5000 }));
      const pool = new WorkerPool();
      disposer.defer(() => pool.close());
      pool.add({ id, transport: new GrpcTransport({ address: worker.address }), slots: 1 });
      const dispatcher = new Dispatcher({ queue, events, pool, store, rateLimits: { types: { stamp: { ...limit, shared: true } }, maxHoldMs: 500 } });
      disposer.defer(() => dispatcher.close({ signal: AbortSignal.timeout(5000) }));
      dispatcher.on("jobStarted", ({ job }) => started.push(job.id));
      dispatcher.on("jobDeferred", ({ job, reason }) => reason === "rate_limited" && deferred.push(job.id));
      dispatchers.push({ dispatcher, queue, events, pool });
    }
    for (const { pool } of dispatchers) await waitFor(() => pool.capacity === 1, { timeoutMs: 15_000, what: "the worker admitted" });
    for (const { dispatcher } of dispatchers) await dispatcher.start();
    const producer = dispatchers[0] as (typeof dispatchers)[number];
    const client = disposer.use(new JobClient<Jobs>({ queue: producer.queue, events: producer.events, defaults: { timeoutMs: 60_000 } }));
    const handles = [];
    for (let i = 0; i < jobs; i++) handles.push(await client.submit({ type: "stamp", payload: null }));
    for (const handle of handles) await handle.result({ timeoutMs: 60_000 });

    const starts = [...workers.values()].flatMap((worker) => startsOf(worker.output())).map(([, at]) => at).sort((a, b) => a - b);
    expect(starts).toHaveLength(jobs);
    // Both dispatchers took part, each with its own connection and store client.
    for (const [id, worker] of workers) expect(startsOf(worker.output()).length, `starts on ${id}`).toBeGreaterThan(0);
    // Any window of one interval holds at most the burst plus one interval's tokens, plus one
    // start whose token came just before the window (a start follows its token by the
    // dispatch's latency).
    const allowed = limit.burst + limit.max + 1;
    for (const [i, from] of starts.entries()) {
      const inWindow = starts.slice(i).filter((at) => at < from + limit.intervalMs).length;
      expect(inWindow, `starts in the interval from start #${i}`).toBeLessThanOrEqual(allowed);
    }
    // And over the whole run: after the burst, no faster than the rate (one token of slack).
    const tokenMs = limit.intervalMs / limit.max;
    expect((starts.at(-1) as number) - (starts[0] as number)).toBeGreaterThanOrEqual((jobs - limit.burst - 1) * tokenMs);
    expect(started).toHaveLength(jobs);
  }, 90_000);
});
