import type { Channel } from "amqplib";
import { OrchestratorError } from "../errors.ts";
import { connectionFrom } from "../queue/amqp/amqp-connection.ts";
import type { AmqpConnection } from "../queue/amqp/amqp-connection.ts";
import { checkInteger, checkObject, checkString, optional } from "../validate.ts";
import type { WorkerDescription } from "../transport/types.ts";
import { checkAddress } from "./static-workers.ts";
import { DEFAULT_ANNOUNCE_EXCHANGE } from "./announcement.ts";
import type { Announcement } from "./announcement.ts";

/** Options of {@link announceWorker}. */
export interface AnnounceWorkerOptions {
  /** The broker, as `amqp://user:pass@host/vhost`; or give `connection`. */
  url?: string;
  /** A shared connection instead of `url`. */
  connection?: AmqpConnection;
  /** `host:port` where orchestrators reach this worker (what it listens on, as seen from them). */
  address: string;
  /** What the worker announces (`WorkerServer.description`); its `workerId` is the id. */
  description: WorkerDescription;
  /**
   * Milliseconds between heartbeats; orchestrators drop the worker after a few missed ones.
   * @default 2000
   */
  intervalMs?: number;
  /** @default "blacktree.workers" */
  exchange?: string;
}

/** A running announcement, returned by {@link announceWorker}. */
export interface WorkerAnnouncer {
  /** Publishes `goodbye` (orchestrators drain the worker out of their pools), stops the heartbeats and closes the connection it owns. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Publishes a worker's presence on the broker so that every orchestrator listening with
 * `BrokerWorkers` adds it to its pool: `alive` now and every `intervalMs` (with its address and
 * description), `goodbye` on `close()`. While the broker is unreachable the heartbeats wait in the
 * connection's buffer and the connection reconnects; orchestrators meanwhile count the worker
 * silent, and find it again with the next heartbeat.
 * @throws {OrchestratorError} `invalid_argument` for bad options; the connection's fatal error
 * (`unauthenticated`, ...) when the first heartbeat cannot be published.
 * @example
 * ```ts
 * const worker = await serveWorker({ handlers, port: 50051 });
 * const announcer = await announceWorker({ url: "amqp://rabbit", address: "10.0.0.7:50051", description: worker.description });
 * ```
 */
export async function announceWorker(options: AnnounceWorkerOptions): Promise<WorkerAnnouncer> {
  const o = checkObject("options", options);
  const address = checkAddress("address", o.address);
  const description = checkObject("description", o.description) as unknown as WorkerDescription;
  const id = checkString("description.workerId", description.workerId, 256);
  const intervalMs = optional(o.intervalMs, 2000, (v) => checkInteger("intervalMs", v, 10, 3_600_000));
  const exchange = optional(o.exchange, DEFAULT_ANNOUNCE_EXCHANGE, (v) => checkString("exchange", v, 255));
  const { connection, owned } = connectionFrom({ ...(o.url === undefined ? {} : { url: o.url }), ...(o.connection === undefined ? {} : { connection: o.connection }) });
  const message = (kind: Announcement["kind"]): Buffer => Buffer.from(JSON.stringify({ v: 1, kind, id, address, intervalMs, description } satisfies Announcement));
  const publish = (kind: Announcement["kind"], confirm: boolean, timeoutMs?: number) =>
    connection.publish({ exchange, routingKey: "", body: message(kind), properties: { contentType: "application/json", expiration: String(intervalMs * 3) }, confirm, timeoutMs });

  await connection.declare(`announce:${exchange}`, async (channel: Channel) => {
    await channel.assertExchange(exchange, "fanout", { durable: true });
  });
  await publish("alive", true);
  let closed: Promise<void> | undefined;
  const timer = setInterval(() => {
    // A heartbeat that cannot go out now is dropped; the next one follows.
    publish("alive", false).catch(() => {});
  }, intervalMs);
  timer.unref();
  const close = (): Promise<void> => {
    closed ??= (async () => {
      clearInterval(timer);
      try {
        await publish("goodbye", true, 2000);
      } catch (error) {
        // Orchestrators drop a worker that falls silent anyway; a goodbye only makes it quicker.
        if (!(error instanceof OrchestratorError)) throw error;
      } finally {
        if (owned) await connection.close();
      }
    })();
    return closed;
  };
  return { close, [Symbol.asyncDispose]: close };
}
