/**
 * An orchestrator process for the console tests: `node console-orchestrator-entry.ts '<json>'`.
 * A Dispatcher on RabbitMQ and PostgreSQL with a pool of gRPC worker processes, and a
 * PoolReporter publishing that pool on the AMQP pool bus (and applying drain commands), as a
 * user composes it. Prints `ready`, then `drain <workerId>` / `undrain <workerId>` for each
 * command applied.
 */
import { AmqpPoolBus } from "../../src/console/pool-bus.ts";
import { PoolReporter } from "../../src/console/pool-reporter.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

interface Config {
  amqpUrl: string;
  queueName: string;
  postgresUrl: string;
  schema: string;
  workers: Array<{ id: string; address: string }>;
  orchestratorId: string;
}

const config = JSON.parse(process.argv[2] ?? "{}") as Config;
const say = (line: string): void => void process.stdout.write(`${line}\n`);
const report = ({ error }: { error: Error }): void => void process.stderr.write(`error ${error.message}\n`);

const connection = new AmqpConnection({ url: config.amqpUrl, heartbeatSec: 2, connectionName: `test-console-api-orchestrator-${process.pid}` });
connection.on("error", report);
const queue = new AmqpQueue({ connection, queueName: config.queueName });
const events = new AmqpEvents({ connection, queueName: config.queueName, subscriberExpiresMs: 10_000 });
queue.on("error", report);
events.on("error", report);
const store = new PostgresJobStore({ connectionString: config.postgresUrl, schema: config.schema });
const pool = new WorkerPool();
for (const worker of config.workers) pool.add({ id: worker.id, transport: new GrpcTransport({ address: worker.address }) });
const dispatcher = new Dispatcher({
  queue, events, pool, store, noWorkerDelayMs: 200, maintenanceIntervalMs: 200, retry: { baseDelayMs: 100, maxDelayMs: 500 },
  dispatcherId: config.orchestratorId,
});
dispatcher.on("error", report);
const bus = new AmqpPoolBus({ connection, queueName: config.queueName });
bus.on("error", report);
const reporter = new PoolReporter({ pool, bus, orchestratorId: config.orchestratorId, intervalMs: 500 });
reporter.on("error", report);
reporter.on("commandApplied", ({ action, workerId }) => say(`${action} ${workerId}`));
await dispatcher.start();
await reporter.start();
say("ready");

process.once("SIGTERM", () => {
  void (async () => {
    await reporter.close();
    await dispatcher.close({ signal: AbortSignal.timeout(2000) }).catch(() => {});
    await pool.close();
    await bus.close();
    await Promise.allSettled([queue.close(), events.close()]);
    await connection.close().catch(() => {});
    await store.close();
    process.exit(0);
  })();
});
