import { afterAll, describe } from "vitest";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { CONTRACT_KEYS, describeQueueContract } from "../../src/testing/contracts/queue-contract.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** One process's view of a deployment: a connection shared by its queue and events. */
function open(queueName: string) {
  const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
  const options = { connection, queueName };
  // Subscriber queues vanish soon after the test.
  const queue = new AmqpQueue(options);
  const events = new AmqpEvents({ ...options, subscriberExpiresMs: 5000 });
  // The contract makes a listener throw on purpose; keep the warning out of the output.
  events.on("error", () => {});
  queue.on("error", () => {});
  return { connection, queue, events };
}

describe.skipIf(!rabbit.available)("AmqpQueue and AmqpEvents on RabbitMQ", () => {
  afterAll(() => rabbit.cleanup());

  describeQueueContract(
    "AmqpQueue/AmqpEvents",
    async () => {
      const queueName = rabbit.queueName(undefined, { keys: CONTRACT_KEYS });
      const main = open(queueName);
      const peers: Array<ReturnType<typeof open>> = [];
      return {
        queue: main.queue,
        events: main.events,
        publishRaw: async (bytes) => {
          await main.queue.ready();
          await rabbit.publishRaw(queueName, bytes);
        },
        deadLetters: () => main.queue.deadLetters(),
        connectPeer: async () => {
          const peer = open(queueName);
          peers.push(peer);
          return { queue: peer.queue, events: peer.events };
        },
        dispose: async () => {
          for (const side of [main, ...peers]) {
            await side.queue.close();
            await side.events.close();
            await side.connection.close();
          }
        },
      };
    },
    { timeoutMs: 8000, quietMs: 300 },
  );
});
