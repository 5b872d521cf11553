/** RabbitMQ helpers of the bench: the local broker only, a fresh queue per round, always deleted after. */
import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import { keyQueueName, resolveTopologyNames, topologyObjects } from "../../src/queue/amqp/topology.ts";
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

/**
 * Deletes queues (and exchanges) whose names are given; never rejects (cleanup after a failure
 * too). A delete the broker refuses closes its channel, so each failure opens a new one: the
 * objects after it are still deleted.
 */
export async function deleteQueues(queues: readonly string[], exchanges: readonly string[] = [], url = AMQP_URL): Promise<void> {
  if (queues.length === 0 && exchanges.length === 0) return;
  const connection = await connect(url).catch(() => undefined);
  if (connection === undefined) return;
  connection.on("error", () => {});
  try {
    let channel: import("amqplib").Channel | undefined;
    const attempt = async (remove: (ch: import("amqplib").Channel) => Promise<unknown>): Promise<void> => {
      if (channel === undefined) {
        channel = await connection.createChannel();
        channel.on("error", () => {});
      }
      await remove(channel).catch(() => {
        channel = undefined;
      });
    };
    for (const q of queues) await attempt((ch) => ch.deleteQueue(q));
    for (const x of exchanges) await attempt((ch) => ch.deleteExchange(x));
  } catch {
    // The connection failed: nothing more can be deleted.
  } finally {
    await connection.close().catch(() => {});
  }
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
 * Deletes a round's topology: every queue and exchange `topologyObjects()` lists for an
 * `AmqpQueue` named `queueName` (job queue and its priority lanes, dead letters, the delay
 * cascade, events, cancel and pool exchanges, cancel log, key log), the queue of each
 * concurrency key in `keys` (their names derive from the keys, which only the round knows),
 * plus the queues named in `known`, on the broker at `url`. By name over AMQP: nothing here runs
 * rabbitmqctl against the shared broker.
 */
export async function deleteTopology(queueName: string, options: { known?: readonly string[]; keys?: readonly string[]; url?: string } = {}): Promise<void> {
  const names = resolveTopologyNames(queueName, undefined);
  const { queues, exchanges } = topologyObjects(names);
  const keyQueues = (options.keys ?? []).map((key) => keyQueueName(names, key));
  await deleteQueues([...new Set([...(options.known ?? []), ...queues, ...keyQueues])], exchanges, options.url);
}
