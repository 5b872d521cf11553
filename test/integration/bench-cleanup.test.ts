import { afterAll, describe, expect, it } from "vitest";
import { deleteTopology } from "../../bench/lib/rabbit.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { keyQueueName, resolveTopologyNames, topologyObjects } from "../../src/queue/amqp/topology.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** The objects among `queues` and `exchanges` that exist on the broker (one passive declare each). */
async function existing(queues: readonly string[], exchanges: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const name of queues) if (await rabbit.withChannel((ch) => ch.checkQueue(name)).then(() => true, () => false)) found.push(name);
  for (const name of exchanges) if (await rabbit.withChannel((ch) => ch.checkExchange(name)).then(() => true, () => false)) found.push(`exchange ${name}`);
  return found;
}

describe.skipIf(!rabbit.available)("the bench's broker cleanup", () => {
  afterAll(() => rabbit.cleanup());

  it("deletes every object topologyObjects() lists and the queues of the round's concurrency keys", async () => {
    const key = `bench-cleanup-${Math.random().toString(36).slice(2)}`;
    const queueName = rabbit.queueName("bench-cleanup", { keys: [key] });
    const names = resolveTopologyNames(queueName, undefined);
    const { queues, exchanges } = topologyObjects(names);
    const keyQueue = keyQueueName(names, key);
    // A round that used the job queue and its lanes, a delay, cancels and a concurrency key.
    const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
    const queue = new AmqpQueue({ connection, queueName });
    const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000 });
    const received: string[] = [];
    const consumption = await queue.consume((delivery) => {
      received.push(delivery.job.id);
      void delivery.ack();
    }, { prefetch: 2 });
    const subscription = await events.subscribeCancels(() => {});
    const jobs = [contractJob({ concurrency: { key, limit: 1, strategy: "wait" } }), contractJob({ priority: 1 })];
    await queue.enqueue(jobs[0] as (typeof jobs)[number]);
    await queue.enqueue(jobs[1] as (typeof jobs)[number], { delayMs: 3 });
    await waitFor(() => received.length === 2, { timeoutMs: 10_000, what: "both jobs" });
    await subscription.close();
    await consumption.cancel();
    await queue.close();
    await events.close();
    await connection.close();
    const declared = await existing([...queues, keyQueue], exchanges);
    // The round did declare the key log, a lane, a delay level and the key's queue.
    for (const name of [names.keyLog, `${queueName}.p1`, keyQueue, names.cancelLog]) expect(declared).toContain(name);

    await deleteTopology(queueName, { keys: [key] });
    expect(await existing([...queues, keyQueue], exchanges)).toEqual([]);
  });
});
