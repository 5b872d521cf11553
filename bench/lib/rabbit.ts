/** RabbitMQ helpers of the bench: the local broker only, a fresh queue per round, always deleted after. */
import { randomUUID } from "node:crypto";
import { connect } from "amqplib";

/** The broker the bench talks to: the local one (override with BENCH_AMQP_URL, still meant for 127.0.0.1). */
export const AMQP_URL = process.env.BENCH_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/** Arguments of the job queue the product uses: a durable quorum queue. */
export const QUORUM_QUEUE_ARGS = { "x-queue-type": "quorum" } as const;

/** A queue name no earlier round used. */
export function freshQueueName(prefix: string): string {
  return `bench-${prefix}-${randomUUID()}`;
}

/** Runs `fn` on a short-lived channel, closing the connection whatever happens. */
export async function withChannel<T>(fn: (channel: import("amqplib").Channel) => Promise<T>): Promise<T> {
  const connection = await connect(AMQP_URL);
  connection.on("error", () => {});
  try {
    const channel = await connection.createChannel();
    channel.on("error", () => {});
    return await fn(channel);
  } finally {
    await connection.close().catch(() => {});
  }
}

/** Declares a durable quorum queue named `name`. */
export async function declareQuorumQueue(name: string): Promise<void> {
  await withChannel((ch) => ch.assertQueue(name, { durable: true, arguments: { ...QUORUM_QUEUE_ARGS } }));
}

/** Deletes queues (and exchanges) whose names are given; never rejects (cleanup after a failure too). */
export async function deleteQueues(queues: readonly string[], exchanges: readonly string[] = []): Promise<void> {
  if (queues.length === 0 && exchanges.length === 0) return;
  await withChannel(async (ch) => {
    for (const q of queues) await ch.deleteQueue(q).catch(() => {});
    for (const x of exchanges) await ch.deleteExchange(x).catch(() => {});
  }).catch(() => {});
}

/** Whether the broker answers within `timeoutMs`. */
export async function brokerReachable(timeoutMs = 3000): Promise<boolean> {
  try {
    const connection = await Promise.race([
      connect(AMQP_URL),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error("timeout")), timeoutMs).unref()),
    ]);
    connection.on("error", () => {});
    await connection.close().catch(() => {});
    return true;
  } catch {
    return false;
  }
}
