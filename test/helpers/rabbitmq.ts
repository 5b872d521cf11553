import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { connect } from "amqplib";
import type { Channel } from "amqplib";

/** The broker integration tests use: `AMQP_URL`, else the local one. */
export const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

const run = promisify(execFile);

/** What {@link useRabbitMq} gives a test file. */
export interface RabbitMq {
  /** Whether the broker answered; tests needing it are skipped (locally) when false. */
  readonly available: boolean;
  readonly url: string;
  /**
   * A queue name of its own for one test (`test-<uuid>`, or `test-<label>-<uuid>`); `cleanup()`
   * deletes every object derived from it.
   */
  queueName(label?: string): string;
  /** Runs `fn` on a throwaway channel of a throwaway connection (inspection, raw publishes). */
  withChannel<T>(fn: (channel: Channel) => Promise<T>): Promise<T>;
  /** Publishes `bytes` straight to `queue` as a foreign producer would (no validation), waiting for the confirm. */
  publishRaw(queue: string, bytes: Uint8Array, headers?: Record<string, unknown>): Promise<void>;
  /** Messages ready in `queue` (0 when it does not exist). */
  messageCount(queue: string): Promise<number>;
  /** Runs `rabbitmqctl` (root only) and returns its stdout. */
  ctl(...args: string[]): Promise<string>;
  /** Deletes every queue and exchange whose name starts with a name `queueName()` handed out. */
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
  const prefixes: string[] = [];

  const withChannel = async <T>(fn: (channel: Channel) => Promise<T>): Promise<T> => {
    const connection = await connect(AMQP_URL);
    connection.on("error", () => {});
    try {
      const channel = await connection.createChannel();
      channel.on("error", () => {});
      return await fn(channel);
    } finally {
      await connection.close().catch(() => {});
    }
  };

  const ctl = async (...args: string[]): Promise<string> => (await run("rabbitmqctl", args, { timeout: 60_000 })).stdout;

  return {
    available,
    url: AMQP_URL,
    queueName(label) {
      const name = label === undefined ? `test-${randomUUID()}` : `test-${label}-${randomUUID()}`;
      prefixes.push(name);
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
    async messageCount(queue) {
      try {
        return await withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
      } catch {
        return 0;
      }
    },
    ctl,
    async cleanup() {
      if (prefixes.length === 0) return;
      const ours = (name: string) => prefixes.some((prefix) => name === prefix || name.startsWith(`${prefix}.`));
      const list = async (kind: "list_queues" | "list_exchanges") =>
        (await ctl(kind, "name", "--quiet", "--no-table-headers").catch(() => "")).split("\n").map((line) => line.trim()).filter(ours);
      const [queues, exchanges] = await Promise.all([list("list_queues"), list("list_exchanges")]);
      await withChannel(async (channel) => {
        for (const queue of queues) await channel.deleteQueue(queue).catch(() => {});
        for (const exchange of exchanges) await channel.deleteExchange(exchange).catch(() => {});
      }).catch(() => {});
      prefixes.length = 0;
    },
  };
}
