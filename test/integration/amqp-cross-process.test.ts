import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandleEvent } from "../../src/client/types.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { AbortMarker } from "../../src/testing/contract-handlers.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { startDispatcherProcess } from "../helpers/amqp-dispatcher-process.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();

/** The producer side, in this (the test) process: a JobClient on its own connection. */
function producer(queueName: string) {
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 2 });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 10_000 });
  const client = new JobClient({ queue, events, defaults: { timeoutMs: 60_000, maxAttempts: 3 } });
  return {
    client,
    async [Symbol.asyncDispose]() {
      await client.close();
      await queue.close();
      await events.close();
      await connection.close();
    },
  };
}

/** Collects a handle's events. */
function record(handle: { on(event: "state" | "progress" | "log", listener: (event: JobHandleEvent) => void): unknown }): JobHandleEvent[] {
  const events: JobHandleEvent[] = [];
  for (const name of ["state", "progress", "log"] as const) handle.on(name, (event) => events.push(event));
  return events;
}

describe.skipIf(!rabbit.available)("JobClient, Dispatcher and workers in separate processes, meeting only through RabbitMQ", () => {
  const markers = mkdtempSync(join(tmpdir(), "blacktree-amqp-"));
  afterAll(async () => {
    rmSync(markers, { recursive: true, force: true });
    await rabbit.cleanup();
  });

  it("brings results, progress and logs to the client's JobHandle, and a cancel() from the client stops the job on its worker", async () => {
    const queueName = rabbit.queueName();
    await using worker = await startWorkerProcess({ slots: 2 });
    await using dispatcher = await startDispatcherProcess({ url: rabbit.url, queueName, workers: [worker.address], slots: 2 });
    await using side = producer(queueName);

    const handle = await side.client.submit({ type: "progress", payload: { steps: 3 } });
    const seen = record(handle);
    expect(await handle.result({ timeoutMs: 15_000 })).toEqual({ steps: 3 });
    expect(seen.filter((e) => e.kind === "log").map((e) => (e.kind === "log" ? [e.line, e.stream] : []))).toEqual([
      ["step 1", "stdout"],
      ["step 2", "stderr"],
      ["step 3", "stdout"],
    ]);
    expect(seen.filter((e) => e.kind === "progress").map((e) => (e.kind === "progress" ? e.progress : -1))).toEqual([0, 1 / 3, 2 / 3, 1, 1]);
    expect(seen.find((e) => e.kind === "state" && e.state === "running")).toBeDefined();

    const marker = join(markers, "cancel-running.json");
    const running = await side.client.submit({ type: "waitForAbort", payload: { marker } });
    await waitFor(() => running.state === "running", { timeoutMs: 15_000, what: "the job running" });
    const cancelledAt = Date.now();
    await running.cancel("requested", { message: "stop from the client" });
    expect((await rejectionOf(running.result({ timeoutMs: 15_000 }))).code).toBe("canceled");
    const stopped = await waitFor(() => {
      try {
        return JSON.parse(readFileSync(marker, "utf8")) as AbortMarker;
      } catch {
        return undefined;
      }
    }, { timeoutMs: 10_000, what: "the worker's handler aborted" });
    // The worker's handler was aborted by this cancel (its reason), after it was sent: no wall-clock bound.
    expect(stopped).toMatchObject({ jobId: running.id, code: "canceled", reason: "requested" });
    expect(stopped.at).toBeGreaterThanOrEqual(cancelledAt);
    expect(dispatcher.started().map(([id]) => id)).toEqual([handle.id, running.id]);
  });

  it("never starts a job cancelled while still queued, on a dispatcher that starts after the cancel", async () => {
    const queueName = rabbit.queueName();
    await using side = producer(queueName);
    const cancelled = await side.client.submit({ type: "echo", payload: { never: "runs" } });
    const seen = record(cancelled);
    await cancelled.cancel("requested");
    const kept = await side.client.submit({ type: "echo", payload: { runs: true } });
    await using worker = await startWorkerProcess({ slots: 1 });
    await using dispatcher = await startDispatcherProcess({ url: rabbit.url, queueName, workers: [worker.address] });
    expect(await kept.result({ timeoutMs: 15_000 })).toEqual({ runs: true });
    expect((await rejectionOf(cancelled.result({ timeoutMs: 15_000 }))).code).toBe("canceled");
    expect(seen.some((e) => e.kind === "state" && e.state === "running")).toBe(false);
    expect(dispatcher.started().map(([id]) => id)).toEqual([kept.id]);
  });

  it("shares jobs between competing dispatchers and loses none when one is killed mid-job", async () => {
    const queueName = rabbit.queueName();
    await using worker = await startWorkerProcess({ slots: 4 });
    await using first = await startDispatcherProcess({ url: rabbit.url, queueName, workers: [worker.address], slots: 2 });
    await using second = await startDispatcherProcess({ url: rabbit.url, queueName, workers: [worker.address], slots: 2 });
    await using side = producer(queueName);
    const handles = await Promise.all(Array.from({ length: 24 }, (_, n) => side.client.submit({ type: "sleep", payload: { ms: 150 + n } })));
    await waitFor(() => first.started().length >= 2 && second.started().length >= 2, { timeoutMs: 15_000, what: "both dispatchers running jobs" });
    first.kill("SIGKILL");
    await first.exited;
    const results = await Promise.all(handles.map((handle) => handle.result({ timeoutMs: 30_000 })));
    expect(results).toEqual(handles.map((_, n) => ({ slept: 150 + n })));
    // What the killed dispatcher was running ran again on the other one, with a higher attempt.
    const rerun = second.started().filter(([, attempt]) => attempt > 1);
    expect(rerun.length).toBeGreaterThanOrEqual(1);
    for (const [id] of rerun) expect(first.started().map(([started]) => started)).toContain(id);
  });
});
