import { afterAll, describe, expect, it } from "vitest";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { expectAllDone, produce, RECOVERY, watch, work } from "../helpers/amqp-fault-kit.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();

describe.skipIf(!rabbit.available)("AmqpQueue under faults: every job completes, none is lost", () => {
  afterAll(() => rabbit.cleanup());

  it("recovers from a connection cut mid-run: lost deliveries come back, buffered and unconfirmed publishes are resolved", async () => {
    await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), heartbeatSec: 2, ...RECOVERY });
    const seen = watch(queue);
    const jobs = Array.from({ length: 300 }, (_, n) => contractJob({ payload: { n } }));
    const { completed, state } = await work(queue, 8, 30);
    const producing = produce(queue, jobs, 8);
    await waitFor(() => completed.size >= 100 && state.running >= 4, { timeoutMs: 20_000, what: "100 jobs completed, 4 running" });
    proxy.cut();
    await producing;
    await expectAllDone(rabbit, queue, jobs, completed);
    expect(seen.disconnected).toBeGreaterThanOrEqual(1);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
    expect(seen.deliveryLost).toBeGreaterThanOrEqual(1);
  });

  it("detects a black-holed link within about one heartbeat timeout, aborts the deliveries it held, and recovers once the route is back", async () => {
    await using proxy = await TcpProxy.start({ port: Number(new URL(rabbit.url).port || 5672) });
    await using queue = new AmqpQueue({ url: proxy.url(rabbit.url), queueName: rabbit.queueName(), heartbeatSec: 1, ...RECOVERY });
    const seen = watch(queue);
    // The first job is still "running" (never acked) when the link goes dark.
    const running = contractJob({ payload: { running: true } });
    const jobs = [running, ...Array.from({ length: 150 }, (_, n) => contractJob({ payload: { n } }))];
    await produce(queue, jobs);
    const { completed, attempts, held } = await work(queue, 8, 20, (d) => d.job.id === running.id && d.attempt === 1);
    await waitFor(() => completed.size >= 40 && held.length === 1, { timeoutMs: 20_000, what: "40 jobs completed" });
    proxy.blackhole();
    const holedAt = Date.now();
    await waitFor(() => seen.disconnected > 0, { timeoutMs: 10_000, what: "the black hole detected" });
    const detectedMs = Date.now() - holedAt;
    // Nothing heard for one 1 s heartbeat timeout (checked every 250 ms), as the broker judges it.
    expect(detectedMs).toBeGreaterThanOrEqual(900);
    expect(detectedMs).toBeLessThan(2500);
    // The dispatcher learns at once that the job it runs went back to the queue.
    const signal = held[0]?.signal as AbortSignal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ code: "queue_closed", details: { reason: "delivery_lost" } });
    expect(seen.deliveryLost).toBeGreaterThanOrEqual(1);
    proxy.restore();
    await expectAllDone(rabbit, queue, jobs, completed);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
    // Delivered again after the fault, with the attempt saying so (x-delivery-count).
    expect(attempts.get(running.id)).toEqual([1, 2]);
  });
});
