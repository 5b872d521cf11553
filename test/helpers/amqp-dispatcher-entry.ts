/**
 * Entry script of an orchestrator process for the RabbitMQ integration tests (see
 * `amqp-dispatcher-process.ts`): `node amqp-dispatcher-entry.ts '<json config>'` composes
 * AmqpConnection → AmqpQueue/AmqpEvents → Dispatcher → WorkerPool of GrpcTransports as a user
 * would, prints `ready` once it consumes, and `started <jobId> <attempt>` for every attempt it runs.
 */
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

interface EntryConfig {
  url: string;
  queueName: string;
  workers: string[];
  slots: number;
}

const config = JSON.parse(process.argv[2] ?? "{}") as EntryConfig;
const connection = new AmqpConnection({ url: config.url, heartbeatSec: 2, reconnect: { baseDelayMs: 100, maxDelayMs: 1000 }, connectionName: `test-dispatcher-${process.pid}` });
const queue = new AmqpQueue({ connection, queueName: config.queueName });
const events = new AmqpEvents({ connection, queueName: config.queueName, subscriberExpiresMs: 10_000 });
const pool = new WorkerPool();
config.workers.forEach((address, i) => pool.add({ id: `w${i}`, transport: new GrpcTransport({ address }), slots: config.slots }));
const dispatcher = new Dispatcher({ queue, events, pool, retry: { baseDelayMs: 100, maxDelayMs: 500 } });
dispatcher.on("jobStarted", ({ job, attempt }) => process.stdout.write(`started ${job.id} ${attempt}\n`));
const report = ({ error }: { error: Error }) => process.stderr.write(`error ${error.message}\n`);
dispatcher.on("error", report);
queue.on("error", report);
events.on("error", report);
connection.on("error", report);
await dispatcher.start();
process.stdout.write("ready\n");
process.once("SIGTERM", () => {
  void (async () => {
    await dispatcher.close({ signal: AbortSignal.timeout(2000) }).catch(() => {});
    await Promise.allSettled([queue.close(), events.close(), pool.close()]);
    await connection.close();
    process.exit(0);
  })();
});
