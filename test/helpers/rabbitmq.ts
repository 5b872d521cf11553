import { randomUUID } from "node:crypto";
import { connect } from "amqplib";
import type { Channel } from "amqplib";
import { keyQueueName, resolveTopologyNames, topologyObjects } from "../../src/queue/amqp/topology.ts";

/** The broker integration tests use: `AMQP_URL`, else the local one. */
export const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/** What {@link useRabbitMq} gives a test file. */
export interface RabbitMq {
  /** Whether the broker answered; tests needing it are skipped (locally) when false. */
  readonly available: boolean;
  readonly url: string;
  /**
   * A queue name of its own for one test (`test-<uuid>`, or `test-<label>-<uuid>`); `cleanup()`
   * deletes every object an `AmqpQueue` derives from it (`topologyObjects`).
   */
  queueName(label?: string, options?: { keys?: readonly string[] }): string;
  /** Runs `fn` on a throwaway channel of a throwaway connection (inspection, raw publishes). */
  withChannel<T>(fn: (channel: Channel) => Promise<T>): Promise<T>;
  /** Publishes `bytes` straight to `queue` as a foreign producer would (no validation), waiting for the confirm. */
  publishRaw(queue: string, bytes: Uint8Array, headers?: Record<string, unknown>): Promise<void>;
  /** Messages ready in `queue` (0 when it does not exist). */
  messageCount(queue: string): Promise<number>;
  /**
   * Deletes the queues and exchanges derived from the names `queueName()` handed out, over AMQP.
   * (Never with `rabbitmqctl`: nothing in the suite runs it against the shared broker; fault
   * tests use private nodes, see `RabbitMqNodes`.)
   */
  cleanup(): Promise<void>;
}

async function probe(url: string, timeoutMs: number): Promise<boolean> {
  const connecting = connect(url, { timeout: timeoutMs });
  connecting.then((c) => c.on("error", () => {}), () => {});
  const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), timeoutMs).unref());
  const connection = await Promise.race([connecting.catch(() => undefined), timeout]);
  if (!connection) {
    connecting.then((c) => c.close().catch(() => {}), () => {});
    return false;
  }
  await connection.close().catch(() => {});
  return true;
}

/** Runs `fn` on a throwaway channel of a throwaway connection to `url`. */
export async function withChannelAt<T>(url: string, fn: (channel: Channel) => Promise<T>): Promise<T> {
  const connection = await connect(url);
  connection.on("error", () => {});
  try {
    const channel = await connection.createChannel();
    channel.on("error", () => {});
    return await fn(channel);
  } finally {
    await connection.close().catch(() => {});
  }
}

/** Messages ready in `queue` on the broker at `url` (0 when it does not exist). */
export async function messageCountAt(url: string, queue: string): Promise<number> {
  try {
    return await withChannelAt(url, async (channel) => (await channel.checkQueue(queue)).messageCount);
  } catch {
    return 0;
  }
}

/**
 * Checks once whether the RabbitMQ integration tests can run. Use at the top of a test file:
 *
 * ```ts
 * const rabbit = await useRabbitMq();
 * describe.skipIf(!rabbit.available)("…", () => { afterAll(() => rabbit.cleanup()); … });
 * ```
 *
 * With `CI=true` a missing broker throws (the file fails: CI must not skip silently); locally it
 * warns loudly and the tests are skipped.
 */
export async function useRabbitMq(): Promise<RabbitMq> {
  const available = await probe(AMQP_URL, 3000);
  if (!available) {
    const message = `RabbitMQ is not answering at ${AMQP_URL.replace(/\/\/[^@/]*@/, "//…@")}`;
    if (process.env.CI === "true") throw new Error(`${message}: the RabbitMQ integration tests cannot run (start it: rabbitmq-server -detached)`);
    console.warn(`\n⚠️  ${message}: SKIPPING the RabbitMQ integration tests (start it with \`rabbitmq-server -detached\`)\n`);
  }
  const created: { name: string; keys: readonly string[] }[] = [];

  const withChannel = <T>(fn: (channel: Channel) => Promise<T>): Promise<T> => withChannelAt(AMQP_URL, fn);

  return {
    available,
    url: AMQP_URL,
    queueName(label, options = {}) {
      const name = label === undefined ? `test-${randomUUID()}` : `test-${label}-${randomUUID()}`;
      created.push({ name, keys: options.keys ?? [] });
      return name;
    },
    withChannel,
    async publishRaw(queue, bytes, headers) {
      const connection = await connect(AMQP_URL);
      connection.on("error", () => {});
      try {
        const channel = await connection.createConfirmChannel();
        channel.on("error", () => {});
        channel.sendToQueue(queue, Buffer.from(bytes), { persistent: true, ...(headers ? { headers } : {}) });
        // Closing right after a large publish could interleave the close with its body frames.
        await channel.waitForConfirms();
      } finally {
        await connection.close().catch(() => {});
      }
    },
    messageCount: (queue) => messageCountAt(AMQP_URL, queue),
    async cleanup() {
      if (created.length === 0) return;
      const queues: string[] = [];
      const exchanges: string[] = [];
      for (const { name, keys } of created.splice(0)) {
        const names = resolveTopologyNames(name, undefined);
        const objects = topologyObjects(names);
        queues.push(...objects.queues, ...keys.map((key) => keyQueueName(names, key)));
        exchanges.push(...objects.exchanges);
      }
      // Deleting a queue or exchange that does not exist succeeds in RabbitMQ.
      await withChannel(async (channel) => {
        for (const queue of queues) await channel.deleteQueue(queue);
        for (const exchange of exchanges) await channel.deleteExchange(exchange);
      }).catch(() => {});
    },
  };
}
