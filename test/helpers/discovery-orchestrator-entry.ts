/**
 * Entry script of an orchestrator process that is given no worker address: it finds workers
 * through the broker (`BrokerWorkers` + `WorkerDiscovery`), as a user composes it, and runs jobs
 * from an `AmqpQueue` on them. `node discovery-orchestrator-entry.ts '{"url","queueName","exchange"}'`
 * prints one JSON object per line: `{"event":"ready"}` once it consumes, then every pool event
 * (`workerAdded`, `workerAdmitted`, `workerState` with `to`, `workerRemoved`) and dispatcher event
 * (`jobStarted`, `jobCompleted`, `jobRetrying`, `jobFailed`, `jobDeferred` with job, attempt, workerId).
 * SIGTERM closes it.
 */
import { BrokerWorkers } from "../../src/discovery/broker-workers.ts";
import { WorkerDiscovery } from "../../src/discovery/worker-discovery.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";

const config = JSON.parse(process.argv[2] ?? "{}") as { url: string; queueName: string; exchange: string };
const print = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);
const connection = new AmqpConnection({ url: config.url, heartbeatSec: 2, reconnect: { baseDelayMs: 100, maxDelayMs: 1000 }, connectionName: `test-workers-orchestrator-${process.pid}` });
const queue = new AmqpQueue({ connection, queueName: config.queueName });
const events = new AmqpEvents({ connection, queueName: config.queueName, subscriberExpiresMs: 10_000 });
const pool = new WorkerPool();
const discovery = new WorkerDiscovery({
  pool,
  sources: [new BrokerWorkers({ connection, exchange: config.exchange })],
  transportFor: (worker) => new GrpcTransport({ address: worker.address }),
});
const dispatcher = new Dispatcher({ queue, events, pool, retry: { baseDelayMs: 100, maxDelayMs: 500 } });
pool.on("workerAdded", ({ worker }) => print({ event: "workerAdded", id: worker.id }));
pool.on("workerAdmitted", ({ worker }) => print({ event: "workerAdmitted", id: worker.id, slots: worker.slots, jobTypes: worker.jobTypes, workerId: worker.description?.workerId }));
pool.on("workerStateChanged", ({ workerId, to }) => print({ event: "workerState", id: workerId, to }));
pool.on("workerRemoved", ({ worker }) => print({ event: "workerRemoved", id: worker.id }));
for (const event of ["jobStarted", "jobCompleted", "jobRetrying", "jobFailed", "jobDeferred"] as const) {
  dispatcher.on(event, (payload) => print({ event, job: payload.job.id, attempt: payload.attempt, ...("workerId" in payload ? { workerId: payload.workerId } : {}) }));
}
const report = ({ error }: { error: Error }) => process.stderr.write(`error ${error.message}\n`);
for (const emitter of [dispatcher, queue, events, connection, discovery, pool]) (emitter as unknown as { on(e: "error", f: typeof report): void }).on("error", report);
await discovery.start();
await dispatcher.start();
print({ event: "ready" });
process.once("SIGTERM", () => {
  void (async () => {
    await dispatcher.close({ signal: AbortSignal.timeout(2000) }).catch(() => {});
    await discovery.close();
    await Promise.allSettled([queue.close(), events.close(), pool.close()]);
    await connection.close();
    process.exit(0);
  })();
});
