import { afterAll, describe, expect, it } from "vitest";
import type { OrchestratorError } from "../../src/errors.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

describe.skipIf(!rabbit.available)("AmqpQueue: the consumer_timeout trap", () => {
  afterAll(() => rabbit.cleanup());

  it("warns once, on the first job whose timeout the broker would cut, on the producer and on the consumer side", async () => {
    const queueName = rabbit.queueName("newcomer-hold");
    const producer = new AmqpQueue({ url: rabbit.url, queueName });
    const consumerSide = new AmqpQueue({ url: rabbit.url, queueName });
    const produced: Array<{ error: OrchestratorError; source: string }> = [];
    const consumed: Array<{ error: OrchestratorError; source: string }> = [];
    producer.on("error", (e) => produced.push(e));
    consumerSide.on("error", (e) => consumed.push(e));
    try {
      await producer.enqueue(contractJob({ timeoutMs: 60_000 })); // fits: no warning
      const long = contractJob({ timeoutMs: 3_600_000 }); // JobClient's default, over RabbitMQ's default 30 min
      await producer.enqueue(long);
      await producer.enqueue(contractJob({ timeoutMs: 3_600_000 }));
      expect(produced.map((e) => [e.source, e.error.code, e.error.details.reason, e.error.details.jobId])).toEqual([
        ["config", "precondition_failed", "consumer_timeout_too_low", long.id],
      ]);
      const deliveries: Delivery[] = [];
      const consumer = await consumerSide.consume((delivery) => deliveries.push(delivery), { prefetch: 3 });
      await waitFor(() => deliveries.length === 3, { timeoutMs: 10_000 });
      expect(consumed.map((e) => [e.source, e.error.details.jobId])).toEqual([["config", long.id]]);
      for (const delivery of deliveries) await delivery.ack();
      await consumer.cancel();
    } finally {
      await producer.close();
      await consumerSide.close();
    }
  });
});
