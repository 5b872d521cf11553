import { afterAll, beforeAll } from "vitest";
import { RabbitMqNodes } from "../../src/testing/broker/rabbitmq-nodes.ts";
import { messageCountAt } from "./rabbitmq.ts";

/** What {@link usePrivateRabbitMq} gives a test file. */
export interface PrivateRabbitMq {
  /** Whether RabbitMQ is installed here; tests needing it are skipped (locally) when false. */
  readonly available: boolean;
  /** The running nodes (after the file's `beforeAll`). */
  readonly brokers: RabbitMqNodes;
  /** Messages ready in `queue`, asked of the first running node. */
  messageCount(queue: string): Promise<number>;
}

/**
 * Whether private RabbitMQ nodes can be started here. With `CI=true` a missing RabbitMQ
 * installation throws (the file fails: CI must not skip silently); locally it warns loudly.
 */
export function privateRabbitMqAvailable(): boolean {
  if (RabbitMqNodes.available()) return true;
  const message = "RabbitMQ is not installed (no rabbitmq-server in RABBITMQ_BIN_DIR or /usr/lib/rabbitmq/bin)";
  if (process.env.CI === "true") throw new Error(`${message}: the private-broker tests cannot run`);
  console.warn(`\n⚠️  ${message}: SKIPPING the private-broker tests\n`);
  return false;
}

/**
 * Starts private RabbitMQ nodes (one, or a cluster) once for the calling `describe` block and
 * stops them after it: every test that kills, freezes or restarts a broker uses these, never the
 * machine's shared broker. With `CI=true` a missing RabbitMQ installation fails the file; locally
 * it warns loudly and the tests are skipped.
 */
export function usePrivateRabbitMq(options: { nodes: number }): PrivateRabbitMq {
  const available = privateRabbitMqAvailable();
  let brokers: RabbitMqNodes | undefined;
  beforeAll(async () => {
    // BLACKTREE_RABBITMQ_DIR keeps the nodes' data and logs after the run, to read after a failure.
    const dir = process.env.BLACKTREE_RABBITMQ_DIR;
    if (available) brokers = await RabbitMqNodes.start({ nodes: options.nodes, ...(dir ? { dir: `${dir}/${Date.now()}` } : {}) });
  }, 400_000);
  afterAll(() => brokers?.close(), 60_000);
  return {
    available,
    get brokers(): RabbitMqNodes {
      if (!brokers) throw new Error("the private RabbitMQ nodes are not started (use them inside tests)");
      return brokers;
    },
    async messageCount(queue) {
      const node = this.brokers.nodes.find((n) => n.state === "running");
      if (!node) throw new Error("no private RabbitMQ node is running");
      return messageCountAt(node.url, queue);
    },
  };
}
