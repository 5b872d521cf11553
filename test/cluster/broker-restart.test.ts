import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { expectAllDone, produce, RECOVERY, watch, work } from "../helpers/amqp-fault-kit.ts";
import { usePrivateRabbitMq } from "../helpers/private-rabbitmq.ts";

// A broker of this file's own: restarting or killing it disturbs nobody else's tests.
describe("AmqpQueue on a private broker node that restarts: every job completes, none is lost", () => {
  const rabbit = usePrivateRabbitMq({ nodes: 1 });

  it.skipIf(!rabbit.available)("survives a broker restart (rabbitmqctl stop_app / start_app) with jobs queued, running and being published", async () => {
    const { brokers } = rabbit;
    await using queue = new AmqpQueue({ url: brokers.urls, queueName: `test-cluster-${randomUUID()}`, heartbeatSec: 2, ...RECOVERY });
    const seen = watch(queue);
    const jobs = Array.from({ length: 300 }, (_, n) => contractJob({ payload: { n } }));
    // Slow enough (about 80 jobs/s) that the restart lands mid-run.
    const { completed } = await work(queue, 4, 50);
    const producing = produce(queue, jobs);
    await waitFor(() => completed.size >= 60, { timeoutMs: 20_000, what: "60 jobs completed" });
    try {
      await brokers.ctl(0, "stop_app");
    } finally {
      await brokers.ctl(0, "start_app");
    }
    await producing;
    await expectAllDone(rabbit, queue, jobs, completed);
    expect(seen.disconnected).toBeGreaterThanOrEqual(1);
    expect(seen.reconnected).toBeGreaterThanOrEqual(1);
  });
});
