/**
 * Chaos dispatcher process: `AmqpQueue`/`AmqpEvents` on one `AmqpConnection` that reaches the
 * broker through this dispatcher's own fault proxy, a `WorkerPool` of `GrpcTransport`s to the
 * four worker processes, a `HealthMonitor` and a `Dispatcher`, composed as a user would.
 *
 * Everything it does to a job, and every connection and worker state change, goes to its
 * append-only log (see log.ts; one line per record, epoch ms second):
 * `start jobId attempt workerId`, `complete …`, `retry … code`, `abandon … code`, `fail … code`,
 * `cancel …`, `deadletter …`, `defer …`, `lost jobId attempt` (AmqpQueue `deliveryLost`),
 * `error jobId message`, `amqp disconnected|reconnected detail`, `worker workerId from to reason`.
 *
 * `amqp connected <node index>` records which broker node (of the `--url` list) it is on.
 *
 * Args: --name d0 --queue NAME --url AMQP_URL[,AMQP_URL…] (its proxies) --workers host:port,… --slots N
 *       --log FILE --heartbeat SEC
 */
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import type { ConsumeOptions, Delivery } from "../../src/queue/types.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { AppendLog } from "./log.ts";

const args = childArgs();
const log = new AppendLog(args.log!);
const now = Date.now;

try {
  const connection = new AmqpConnection({
    url: args.url!.split(","),
    connectionName: `chaos-${args.name}`,
    heartbeatSec: Number(args.heartbeat ?? 1),
    // A black-holed handshake must give up soon, so the next attempt goes through once restored.
    connectTimeoutMs: 3000,
    reconnect: { baseDelayMs: 100, maxDelayMs: 2000 },
  });
  connection.on("error", ({ error }) => log.write("amqp", now(), "error", error.message));
  connection.on("connected", ({ node }) => log.write("amqp", now(), "connected", node.index));
  const queue = new AmqpQueue({ connection, queueName: args.queue! });
  const events = new AmqpEvents({ connection, queueName: args.queue! });
  queue.on("disconnected", ({ error }) => log.write("amqp", now(), "disconnected", error.message));
  queue.on("reconnected", ({ downtimeMs }) => log.write("amqp", now(), "reconnected", `${downtimeMs} ms down`));
  queue.on("deliveryLost", ({ jobId, attempt, error }) => log.write("lost", now(), jobId, attempt, error.message));
  queue.on("error", ({ error, source }) => log.write("amqp", now(), "error", `${source}: ${error.message}`));
  events.on("error", ({ error, source }) => log.write("amqp", now(), "error", `events ${source}: ${error.message}`));
  await queue.ready({ timeoutMs: 15_000 });

  const pool = new WorkerPool();
  const slots = Number(args.slots ?? 4);
  (args.workers ?? "").split(",").filter(Boolean).forEach((address, i) => pool.add({ id: `w${i}`, transport: new GrpcTransport({ address }), slots }));
  // Checks every second so a worker back from a kill or a freeze returns within ~2 s.
  const monitor = new HealthMonitor({ target: pool, intervalMs: 1000, timeoutMs: 1000, failureThreshold: 2, recoveryThreshold: 2 });
  // Every delivery handed to the dispatcher is logged ("recv") before it acts on it: a job that
  // ends with no outcome and never reached a dispatcher was lost before any consumer saw it.
  const observed = new Proxy(queue, {
    get(target, property) {
      if (property === "consume") {
        return (handler: (delivery: Delivery) => void, options: ConsumeOptions) =>
          target.consume((delivery) => {
            log.write("recv", now(), delivery.job.id, delivery.attempt);
            handler(delivery);
          }, options);
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const dispatcher = new Dispatcher({ queue: observed, events, pool, retry: { baseDelayMs: 200, maxDelayMs: 2000 } });
  dispatcher.on("jobStarted", ({ job, attempt, workerId }) => log.write("start", now(), job.id, attempt, workerId));
  dispatcher.on("jobCompleted", ({ job, attempt, workerId }) => log.write("complete", now(), job.id, attempt, workerId));
  dispatcher.on("jobRetrying", ({ job, attempt, workerId, error }) => log.write("retry", now(), job.id, attempt, workerId, error.code));
  dispatcher.on("jobAbandoned", ({ job, attempt, workerId, error }) => log.write("abandon", now(), job.id, attempt, workerId, error.code));
  dispatcher.on("jobFailed", ({ job, attempt, workerId, error }) => log.write("fail", now(), job.id, attempt, workerId, `${error.code}: ${error.message}`));
  dispatcher.on("jobCancelled", ({ job, attempt, workerId }) => log.write("cancel", now(), job.id, attempt, workerId));
  dispatcher.on("jobDeadLettered", ({ job, attempt, reason }) => log.write("deadletter", now(), job.id, attempt, "", reason));
  dispatcher.on("jobDeferred", ({ job, attempt, reason }) => log.write("defer", now(), job.id, attempt, "", reason));
  dispatcher.on("error", ({ error }) => log.write("error", now(), String(error.details.jobId ?? ""), error.message));
  // Health transitions only: idle <-> busy happens per job.
  pool.on("workerStateChanged", ({ workerId, from, to, reason }) => {
    const healthy = (state: string) => state === "idle" || state === "busy";
    if (healthy(from) !== healthy(to)) log.write("worker", now(), workerId, from, to, reason);
  });

  serveChild(
    {
      start: async () => {
        monitor.start();
        await dispatcher.start();
        log.write("started", now());
        return null;
      },
      /** Whether this dispatcher holds no job (none running, waiting for a slot or settling). */
      idle: async () => {
        let idle = false;
        await dispatcher.onIdle({ timeoutMs: 50 }).then(() => (idle = true), () => {});
        return { idle, running: dispatcher.running, capacity: pool.capacity };
      },
    },
    {
      onExit: async () => {
        await dispatcher.close({ signal: AbortSignal.timeout(1000) }).catch(() => {});
        await monitor.close();
        await pool.close();
        await queue.close().catch(() => {});
        await events.close().catch(() => {});
        await connection.close().catch(() => {});
      },
    },
  );
  signalReady({ pid: process.pid });
} catch (err) {
  signalFatal(err);
}
