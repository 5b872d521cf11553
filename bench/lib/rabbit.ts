/** RabbitMQ helpers of the bench: the local broker only, a fresh queue per round, always deleted after. */
import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import { resolveTopologyNames, topologyObjects } from "../../src/queue/amqp/topology.ts";
import { withChannelAt } from "../../test/helpers/rabbitmq.ts";

/** The broker the bench talks to: the local one (override with BENCH_AMQP_URL, still meant for 127.0.0.1). */
export const AMQP_URL = process.env.BENCH_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/** Arguments of the job queue the product uses: a durable quorum queue. */
export const QUORUM_QUEUE_ARGS = { "x-queue-type": "quorum" } as const;

/** A queue name no earlier round used. */
export function freshQueueName(prefix: string): string {
  return `bench-${prefix}-${randomUUID()}`;
}

/** Runs `fn` on a short-lived channel, closing the connection whatever happens. */
export function withChannel<T>(fn: (channel: import("amqplib").Channel) => Promise<T>): Promise<T> {
  return withChannelAt(AMQP_URL, fn);
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

/** The broker's version when it answers within `timeoutMs`, otherwise `undefined`. */
export async function brokerVersion(timeoutMs = 3000, url = AMQP_URL): Promise<string | undefined> {
  const connecting = connect(url);
  // A connection that opens after the timeout is closed, not leaked.
  connecting.then((c) => c.on("error", () => {}), () => {});
  const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), timeoutMs).unref());
  const connection = await Promise.race([connecting.catch(() => undefined), timeout]);
  if (!connection) {
    connecting.then((c) => c.close().catch(() => {}), () => {});
    return undefined;
  }
  const version = String(connection.connection.serverProperties.version ?? "unknown");
  await connection.close().catch(() => {});
  return version;
}

/**
 * Deletes a product round's topology: every queue and exchange an `AmqpQueue` named `queueName`
 * derives (job queue, dead letters, delay queues, events and cancel exchanges, cancel log), plus
 * the names in `known`. By name over AMQP: nothing here runs rabbitmqctl against the shared broker.
 */
export async function deleteTopology(queueName: string, known: readonly string[] = []): Promise<void> {
  const { queues, exchanges } = topologyObjects(resolveTopologyNames(queueName, undefined));
  await deleteQueues([...new Set([...known, ...queues])], exchanges);
}
