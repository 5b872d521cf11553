/**
 * A producer process and an orchestrator process that meet only through RabbitMQ.
 *
 * Start RabbitMQ (3.9+, quorum queues and streams enabled), then, in two terminals:
 *
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 node examples/rabbitmq.ts orchestrator
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 node examples/rabbitmq.ts producer --jobs 5
 *
 * The orchestrator (AmqpQueue + AmqpEvents on one connection, a WorkerPool, a HealthMonitor and
 * a Dispatcher) runs `thumbnails` jobs on two in-process workers of two slots each, until
 * Ctrl-C / SIGTERM, then shuts down gracefully. The producer submits jobs with a JobClient,
 * prints each job's progress and log lines as the orchestrator's workers report them, waits for
 * every result and exits (0 when all completed). Start either first: jobs wait in the queue.
 * Run more orchestrators to share the jobs; stop one mid-job and its jobs run again elsewhere.
 *
 * Options: `--queue NAME` (both roles; default `blacktree.example`), `--jobs N` (producer),
 * `--workers N --slots N` (orchestrator). `AMQP_URL` defaults to the local broker.
 * Workers in other processes or machines: replace the InProcessTransport with
 * `new GrpcTransport({ address })` from `@blacktree/orchestrator/grpc` and serve the same handlers
 * with `serveWorker({ handlers })` from `@blacktree/orchestrator/worker` (see examples/demo.ts).
 *
 * It imports the package by name, as an app does: copy it into a project that depends on
 * @blacktree/orchestrator and run it with `node` (22.18+, which runs TypeScript). In this
 * repository, add `--import ./scripts/source-imports.mjs` to run it against the sources.
 */
import { parseArgs } from "node:util";
import { Dispatcher, HealthMonitor, InProcessTransport, JobClient, OrchestratorError, WorkerPool } from "@blacktree/orchestrator";
import type { JobTypesOf } from "@blacktree/orchestrator";
import { AmqpConnection, AmqpEvents, AmqpQueue } from "@blacktree/orchestrator/amqp";
import type { JobContext } from "@blacktree/orchestrator/worker";

/** The job types this deployment runs. The producer only needs their types. */
const handlers = {
  /** Pretends to render one thumbnail per size, reporting progress; stops when its signal fires. */
  async thumbnails(payload: { image: string; sizes: number[] }, ctx: JobContext): Promise<{ image: string; files: string[] }> {
    const files: string[] = [];
    for (const [i, size] of payload.sizes.entries()) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, 150);
        ctx.signal.addEventListener("abort", () => (clearTimeout(timer), reject(ctx.signal.reason)), { once: true });
      });
      files.push(`${payload.image.replace(/\.\w+$/, "")}-${size}.webp`);
      ctx.log(`rendered ${size}px (attempt ${ctx.attempt})`);
      ctx.progress((i + 1) / payload.sizes.length, `${i + 1}/${payload.sizes.length} sizes`);
    }
    return { image: payload.image, files };
  },
};
type Jobs = JobTypesOf<typeof handlers>;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    queue: { type: "string", default: "blacktree.example" },
    jobs: { type: "string", default: "5" },
    workers: { type: "string", default: "2" },
    slots: { type: "string", default: "2" },
  },
});
const url = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const queueName = values.queue;
const log = (line: string) => console.log(`[${positionals[0]}] ${line}`);

/** One connection per process, shared by the queue and the events. */
function connect(role: string) {
  const connection = new AmqpConnection({ url, connectionName: `blacktree-example-${role}` });
  const queue = new AmqpQueue({ connection, queueName });
  const events = new AmqpEvents({ connection, queueName });
  // The connection's ups and downs reach both; log them once. Errors no call can report, from either.
  queue.on("disconnected", ({ error }) => log(`lost the broker: ${error.message}`));
  queue.on("reconnected", ({ downtimeMs }) => log(`broker back after ${downtimeMs} ms`));
  queue.on("error", ({ error }) => log(`queue: ${error.message}`));
  events.on("error", ({ error }) => log(`events: ${error.message}`));
  return {
    queue,
    events,
    async close() {
      await queue.close();
      await events.close();
      await connection.close();
    },
  };
}

async function orchestrator(): Promise<void> {
  const amqp = connect("orchestrator");
  // Fails at once on a bad URL, credentials or a queue declared with other arguments.
  await amqp.queue.ready({ timeoutMs: 10_000 });
  const pool = new WorkerPool();
  const slots = Number(values.slots);
  for (let i = 1; i <= Number(values.workers); i++) {
    pool.add({ id: `worker-${i}`, slots, transport: new InProcessTransport({ handlers, slots }) });
  }
  const monitor = new HealthMonitor({ target: pool });
  const dispatcher = new Dispatcher({ queue: amqp.queue, events: amqp.events, pool, retry: { baseDelayMs: 500 } });
  dispatcher.on("jobStarted", ({ job, attempt, workerId }) => log(`${job.id} started on ${workerId} (attempt ${attempt})`));
  dispatcher.on("jobCompleted", ({ job, durationMs }) => log(`${job.id} completed in ${durationMs} ms`));
  dispatcher.on("jobRetrying", ({ job, error, delayMs }) => log(`${job.id} retrying in ${delayMs} ms: ${error.message}`));
  dispatcher.on("jobFailed", ({ job, error }) => log(`${job.id} failed: ${error.message}`));
  dispatcher.on("jobCancelled", ({ job, reason }) => log(`${job.id} cancelled (${reason})`));
  dispatcher.on("error", ({ error }) => log(`dispatcher: ${error.message}`));
  monitor.start();
  await dispatcher.start();
  log(`ready: consuming "${queueName}" with ${pool.capacity} slots; Ctrl-C to stop`);

  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  log("stopping: running jobs get 10 s to finish, then go back to the queue");
  await dispatcher.close({ signal: AbortSignal.timeout(10_000) });
  await monitor.close();
  await pool.close();
  await amqp.close();
  log("stopped");
}

async function producer(): Promise<boolean> {
  const amqp = connect("producer");
  const client = new JobClient<Jobs>({ queue: amqp.queue, events: amqp.events, defaults: { timeoutMs: 60_000, maxAttempts: 3 } });
  try {
    const handles = [];
    for (let i = 1; i <= Number(values.jobs); i++) {
      const handle = await client.submit({ type: "thumbnails", payload: { image: `photo-${i}.jpg`, sizes: [64, 256, 1024] } });
      handle.on("progress", ({ progress, message }) => log(`${handle.id} ${Math.round(progress * 100)}% ${message ?? ""}`));
      handle.on("log", ({ line }) => log(`${handle.id} log: ${line}`));
      handles.push(handle);
      log(`submitted ${handle.id}`);
    }
    const outcomes = await Promise.all(
      handles.map((handle) =>
        handle.result({ timeoutMs: 120_000 }).then(
          (result) => (log(`${handle.id} result: ${result.files.join(", ")}`), true),
          (error: unknown) => (log(`${handle.id} ${OrchestratorError.from(error).message}`), false),
        ),
      ),
    );
    const completed = outcomes.filter(Boolean).length;
    log(`${completed} of ${handles.length} jobs completed`);
    return completed === handles.length;
  } finally {
    await client.close();
    await amqp.close();
  }
}

const role = positionals[0];
if (role === "orchestrator") {
  await orchestrator();
} else if (role === "producer") {
  process.exitCode = (await producer()) ? 0 : 1;
} else {
  console.error("usage: node examples/rabbitmq.ts orchestrator|producer [--queue NAME] [--jobs N] [--workers N] [--slots N]");
  process.exitCode = 2;
}
