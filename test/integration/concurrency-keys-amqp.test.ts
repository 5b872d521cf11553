import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandle } from "../../src/client/job-handle.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { keyQueueName } from "../../src/queue/amqp/topology.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { startDispatcherProcess } from "../helpers/amqp-dispatcher-process.ts";
import { keyLogHandlersModule } from "../helpers/key-log-handlers.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();

type Jobs = { logged: { payload: { file: string; name: string; ms: number }; result: string } };

function producer(queueName: string) {
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 2 });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 10_000 });
  const client = new JobClient<Jobs>({ queue, events, defaults: { timeoutMs: 60_000, maxAttempts: 5 } });
  return {
    client,
    queue,
    async [Symbol.asyncDispose]() {
      await client.close();
      await queue.close();
      await events.close();
      await connection.close();
    },
  };
}

/** The start/end lines the workers wrote, each `[kind, name, attempt]`. */
function readLog(file: string): Array<[string, string, number]> {
  return readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((line) => {
    const [kind, name, attempt] = line.split(" ") as [string, string, string];
    return [kind, name, Number(attempt)];
  });
}

/** The most attempts running at once, judged by the order of the lines alone. */
function peakRunning(lines: ReadonlyArray<[string, string, number]>): number {
  let running = 0;
  let peak = 0;
  for (const [kind] of lines) {
    running += kind === "start" ? 1 : -1;
    peak = Math.max(peak, running);
  }
  return peak;
}

describe.skipIf(!rabbit.available)("concurrency keys on RabbitMQ", () => {
  const dir = mkdtempSync(join(tmpdir(), "blacktree-keys-"));
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await rabbit.cleanup();
  });

  it("never runs two jobs of a key of limit 1 at once across two dispatcher processes, one SIGKILLed while holding it; the waiting jobs then all complete", async () => {
    const key = "env:prod";
    const queueName = rabbit.queueName("keys", { keys: [key] });
    const file = join(dir, "two-dispatchers.log");
    writeFileSync(file, "");
    const workerOptions = { handlersModule: keyLogHandlersModule, handlersExport: "keyLogHandlers", slots: 2 };
    await using w1 = await startWorkerProcess(workerOptions);
    await using w2 = await startWorkerProcess(workerOptions);
    const workers = [w1.address, w2.address];
    await using d1 = await startDispatcherProcess({ url: rabbit.url, queueName, workers, slots: 2 });
    await using d2 = await startDispatcherProcess({ url: rabbit.url, queueName, workers, slots: 2 });
    await using side = producer(queueName);

    const names = Array.from({ length: 8 }, (_, i) => `deploy${i}`);
    const handles: Array<JobHandle<string>> = [];
    for (const name of names) handles.push(await side.client.submit({ type: "logged", payload: { file, name, ms: 250 }, concurrency: { key } }));
    // Kill whichever dispatcher runs the first job, while that job still runs.
    const [first] = await waitFor(() => {
      const lines = readLog(file);
      return lines.length > 0 && lines[0]?.[0] === "start" && lines.length === 1 ? lines : undefined;
    }, { timeoutMs: 20_000, what: "the first job of the key started", intervalMs: 5 });
    // The dispatcher's own "started" line travels on its stdout and may reach us after the worker's log line.
    const holder = await waitFor(() => [d1, d2].find((d) => d.started().some(([id]) => id === handles[names.indexOf(first?.[1] as string)]?.id)), {
      timeoutMs: 20_000,
      what: "the dispatcher holding the first job",
      intervalMs: 5,
    });
    holder?.kill("SIGKILL");
    await holder?.exited;

    expect(await Promise.all(handles.map((h) => h.result({ timeoutMs: 60_000 })))).toEqual(names);
    const lines = readLog(file);
    expect(peakRunning(lines)).toBe(1);
    // The killed holder's attempt ended on its worker (aborted) before anything else started.
    expect(lines.slice(0, 2)).toEqual([["start", first?.[1], 1], ["end", first?.[1], 1]]);
    // Each job once, the killed holder's twice; more only for a job the killed dispatcher was
    // moving into the key's queue when it died (published there, its first delivery not yet
    // acked: at-least-once puts it there twice). Never two at once, whatever the count.
    const starts = lines.filter(([kind]) => kind === "start");
    expect(starts.length).toBeGreaterThanOrEqual(names.length + 1);
    expect(new Set(starts.map(([, name]) => name))).toEqual(new Set(names));
    const survivor = holder === d1 ? d2 : d1;
    expect(new Set(survivor.started().map(([id]) => id))).toEqual(new Set(handles.map((h) => h.id)));
  });

  it("keeps 50 jobs waiting on a busy key in its queue on the broker, off the prefetch and the workers, while other jobs run; drop_newest and cancel_running act", async () => {
    const busy = "busy";
    const queueName = rabbit.queueName("keys", { keys: [busy, "other", "drop", "newest"] });
    const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 2 });
    const queue = new AmqpQueue({ connection, queueName });
    const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 10_000 });
    const release = new Map<string, () => void>();
    const started: string[] = [];
    const transport = new InProcessTransport({
      slots: 2,
      handlers: {
        logged: async (payload: { name: string; hold?: boolean }, ctx: JobContext) => {
          started.push(payload.name);
          if (payload.hold === true) {
            await new Promise<void>((resolve, reject) => {
              release.set(payload.name, resolve);
              ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
            });
          }
          return payload.name;
        },
      },
    });
    const pool = new WorkerPool();
    pool.add({ id: "w", transport, slots: 2 });
    const dispatcher = new Dispatcher({ queue, events, pool });
    const client = new JobClient<{ logged: { payload: { name: string; hold?: boolean }; result: string } }>({ queue, events });
    try {
      await dispatcher.start();
      const holder = await client.submit({ type: "logged", payload: { name: "holder", hold: true }, concurrency: { key: busy } });
      await waitFor(() => started.includes("holder"), { timeoutMs: 15_000, what: "the holder started" });
      const waiting: Array<JobHandle<string>> = [];
      for (let i = 0; i < 50; i++) waiting.push(await client.submit({ type: "logged", payload: { name: `w${i}` }, concurrency: { key: busy } }));
      // 49 wait in the key's queue on the broker; one (next in line) is held by the key's consumer, unstarted.
      await waitFor(async () => (await rabbit.messageCount(keyQueueName(queue.names, busy))) === 49, { timeoutMs: 15_000, what: "49 jobs ready in the key's queue" });
      await waitFor(() => waiting[49]?.reason?.includes(`waiting for concurrency key "${busy}"`), { timeoutMs: 15_000, what: "the last waiter says why" });
      expect(waiting[49]?.state).toBe("queued");
      // The second slot runs an unkeyed job and another key's job.
      const plain = await client.submit({ type: "logged", payload: { name: "plain" } });
      const other = await client.submit({ type: "logged", payload: { name: "other" }, concurrency: { key: "other" } });
      expect(await plain.result({ timeoutMs: 15_000 })).toBe("plain");
      expect(await other.result({ timeoutMs: 15_000 })).toBe("other");
      expect(holder.state).toBe("running");
      expect(started.filter((name) => name.startsWith("w"))).toEqual([]);

      // drop_newest on a full key finishes cancelled, saying why.
      const dropHolder = await client.submit({ type: "logged", payload: { name: "dropHolder", hold: true }, concurrency: { key: "drop", strategy: "drop_newest" } });
      await waitFor(() => started.includes("dropHolder"), { timeoutMs: 15_000, what: "the drop key's holder started" });
      const dropped = await client.submit({ type: "logged", payload: { name: "dropped" }, concurrency: { key: "drop", strategy: "drop_newest" } });
      const droppedError = await rejectionOf(dropped.result({ timeoutMs: 15_000 }));
      expect(droppedError.code).toBe("canceled");
      expect(droppedError.message).toContain('dropped: concurrency key "drop" was at its limit of 1 (strategy drop_newest)');
      expect(started).not.toContain("dropped");
      release.get("dropHolder")?.();
      expect(await dropHolder.result({ timeoutMs: 15_000 })).toBe("dropHolder");

      // cancel_running: the newest job cancels the holder and runs after it stopped.
      const old = await client.submit({ type: "logged", payload: { name: "old", hold: true }, concurrency: { key: "newest", strategy: "cancel_running" } });
      await waitFor(() => started.includes("old"), { timeoutMs: 15_000, what: "the old job started" });
      const newer = await client.submit({ type: "logged", payload: { name: "newer" }, concurrency: { key: "newest", strategy: "cancel_running" } });
      const oldError = await rejectionOf(old.result({ timeoutMs: 15_000 }));
      expect(oldError.message).toContain(`superseded by job ${newer.id} on concurrency key "newest"`);
      expect(await newer.result({ timeoutMs: 15_000 })).toBe("newer");

      release.get("holder")?.();
      expect(await holder.result({ timeoutMs: 15_000 })).toBe("holder");
      await Promise.all(waiting.map((h) => h.result({ timeoutMs: 30_000 })));
      expect(started.filter((name) => /^w\d+$/.test(name))).toEqual(waiting.map((_, i) => `w${i}`));
    } finally {
      await dispatcher.close({ signal: AbortSignal.timeout(5000) });
      await client.close();
      await pool.close();
      await queue.close();
      await events.close();
      await connection.close();
    }
  });
});
