/** The product's RabbitMQ side as a user composes it: one `AmqpConnection` shared by `AmqpQueue` and `AmqpEvents`. */
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { AMQP_URL } from "../lib/rabbit.ts";
import { benchQueueOptions } from "./priority-mode.ts";

/** An open queue + events pair on the deployment named `queueName`. */
export interface OpenAmqp {
  connection: AmqpConnection;
  queue: AmqpQueue;
  events: AmqpEvents;
  close(): Promise<void>;
}

/** Connects and declares the topology of `queueName` (idempotent: every process of a round does it). */
export async function openAmqp(
  queueName: string,
  role: string,
  onError: (source: string, error: Error) => void = () => {},
  url: string | readonly string[] = AMQP_URL,
): Promise<OpenAmqp> {
  const connection = new AmqpConnection({ url, connectionName: `bench-${role}`, ...(Array.isArray(url) ? { heartbeatSec: 2, connectTimeoutMs: 3000, reconnect: { baseDelayMs: 100, maxDelayMs: 2000 } } : {}) });
  connection.on("error", ({ error }) => onError("connection", error));
  const queue = new AmqpQueue({ connection, queueName, ...benchQueueOptions() });
  const events = new AmqpEvents({ connection, queueName });
  queue.on("error", ({ error }) => onError("queue", error));
  events.on("error", ({ error }) => onError("events", error));
  await queue.ready({ timeoutMs: 15_000 });
  return {
    connection,
    queue,
    events,
    close: async () => {
      await queue.close().catch(() => {});
      await events.close().catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}
