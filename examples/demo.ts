/**
 * `npm run demo`: the orchestrator at work on this machine, no broker needed.
 *
 * Three real worker processes serve a `build` handler over gRPC (examples/demo/worker.ts).
 * One orchestrator (WorkerPool + HealthMonitor + Dispatcher) takes twenty jobs of mixed length
 * from the embedded MemoryQueue — or from RabbitMQ with `AMQP_URL=amqp://… npm run demo`.
 * Along the way it cancels one job mid-run and freezes one worker (SIGSTOP), so you see the
 * worker evicted, its job retried elsewhere, and the worker come back once thawed.
 * It exits 0 when every job ended as expected.
 *
 * While it runs it serves the operator's console (`createConsole()`) at the printed
 * http://127.0.0.1 address. `npm run demo -- --console` (or `DEMO_CONSOLE=keep`) keeps the
 * orchestrator and the console running after the jobs, until Ctrl-C: submit, cancel, drain and
 * redrive from the page. `DEMO_CONSOLE_PORT` picks the port (default: any free one).
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  Dispatcher,
  HealthMonitor,
  JobClient,
  MemoryJobStore,
  MemoryQueue,
  OrchestratorError,
  WorkerPool,
} from "@blacktree/orchestrator";
import type { JobEvents, JobHandle, JobQueue, JobStore } from "@blacktree/orchestrator";
import type { AmqpTopologyNames } from "@blacktree/orchestrator/amqp";
import { createConsole, MemoryPoolBus, PoolReporter } from "@blacktree/orchestrator/console";
import { GrpcTransport } from "@blacktree/orchestrator/grpc";
import { Board } from "./demo/board.ts";
import type { BuildPayload, BuildResult } from "./demo/worker.ts";

type Jobs = { build: { payload: BuildPayload; result: BuildResult } };

const WORKERS = ["w1", "w2", "w3"] as const;
const SLOTS = 2;
const JOBS = 20;

interface WorkerProcess {
  id: string;
  child: ChildProcess;
  address: string;
}

function startWorker(id: string): Promise<WorkerProcess> {
  const entry = fileURLToPath(new URL("./demo/worker.ts", import.meta.url));
  // The worker runs under this process's Node flags (--no-warnings, and in this repository the
  // --import that maps the package name to the sources).
  const child = spawn(process.execPath, [...process.execArgv, entry, "--id", id, "--slots", String(SLOTS)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`worker ${id} did not start within 15 s`)), 15_000);
    child.once("exit", (code) => reject(new Error(`worker ${id} exited with code ${code} before it was ready`)));
    child.stdout!.on("data", (chunk: Buffer) => {
      buffer += chunk.toString();
      const match = /ready (\d+)/.exec(buffer);
      if (match) {
        clearTimeout(timer);
        child.stdout!.removeAllListeners("data");
        child.stdout!.resume();
        resolve({ id, child, address: `127.0.0.1:${match[1]}` });
      }
    });
  });
}

async function openQueue(): Promise<{ queue: JobQueue; events: JobEvents; name: string; close(): Promise<void> }> {
  const url = process.env.AMQP_URL;
  if (!url) {
    const memory = new MemoryQueue();
    return { queue: memory, events: memory, name: "embedded MemoryQueue", close: () => memory.close() };
  }
  const { AmqpQueue, AmqpEvents } = await import("@blacktree/orchestrator/amqp");
  // A queue name of its own per run, so a demo never picks up another run's leftovers.
  const prefix = `blacktree-demo-${process.pid}`;
  const queue = new AmqpQueue({ url, queueName: `${prefix}.jobs` });
  const events = new AmqpEvents({ url, queueName: `${prefix}.jobs` });
  return {
    queue,
    events,
    name: `RabbitMQ at ${url.replace(/\/\/[^@]*@/, "//")}`,
    close: async () => {
      await events.close();
      await queue.close();
      await deleteTopology(url, queue.names);
    },
  };
}

/**
 * Removes the queues and exchanges this run declared, by the names the queue itself resolved, so
 * repeated demos leave nothing behind on the broker. Deleting a name that was never declared is a
 * no-op in RabbitMQ.
 */
async function deleteTopology(url: string, names: Readonly<AmqpTopologyNames>): Promise<void> {
  const { default: amqp } = await import("amqplib");
  const { topologyObjects } = await import("@blacktree/orchestrator/amqp");
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createChannel();
    const { queues, exchanges } = topologyObjects(names);
    for (const queue of queues) await channel.deleteQueue(queue);
    for (const exchange of exchanges) await channel.deleteExchange(exchange);
  } finally {
    await connection.close();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The operator's console on 127.0.0.1: the same queue, events and store as the orchestrator, and
 * the pool seen through a PoolReporter on an in-process bus. Every action is allowed, since only
 * this machine can reach it; a real deployment's `authorize` asks its own sessions (see README).
 */
async function serveConsole(options: { queue: JobQueue; events: JobEvents; store: JobStore; pool: WorkerPool; port: number }) {
  const bus = new MemoryPoolBus();
  const reporter = new PoolReporter({ pool: options.pool, bus, intervalMs: 1000 });
  await reporter.start();
  const handler = createConsole({
    queue: options.queue,
    events: options.events,
    store: options.store,
    poolBus: bus,
    identify: () => "demo",
    authorize: () => true,
  });
  await handler.ready();
  const server: Server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, "127.0.0.1", resolve);
  });
  const address = server.address();
  const url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : options.port}/`;
  return {
    url,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await handler.close();
      await reporter.close();
      await bus.close();
    },
  };
}

async function main(): Promise<number> {
  const started = Date.now();
  const { values: flags } = parseArgs({ options: { console: { type: "boolean", default: false } } });
  const keepConsole = flags.console || process.env.DEMO_CONSOLE === "keep";
  const workers = await Promise.all(WORKERS.map((id) => startWorker(id)));
  const { queue, events, name, close: closeQueue } = await openQueue();
  const store = new MemoryJobStore();

  const pool = new WorkerPool();
  const operatorConsole = await serveConsole({ queue, events, store, pool, port: Number(process.env.DEMO_CONSOLE_PORT ?? 0) });
  console.log(`Console: ${operatorConsole.url}${keepConsole ? " (stays open after the jobs, until Ctrl-C)" : " (while the demo runs; `npm run demo -- --console` keeps it open)"}`);
  const board = new Board(`Blacktree Orchestrator demo — ${JOBS} jobs, ${WORKERS.length} gRPC worker processes × ${SLOTS} slots, ${name}`);
  for (const worker of workers) {
    pool.add({ id: worker.id, slots: SLOTS, transport: new GrpcTransport({ address: worker.address }) });
    board.worker(worker.id, { state: "idle" });
  }
  const health = new HealthMonitor({ target: pool, intervalMs: 500, timeoutMs: 400, failureThreshold: 2, recoveryThreshold: 2 });
  const dispatcher = new Dispatcher({ queue, events, pool, store, retry: { baseDelayMs: 200, maxDelayMs: 2000 } });
  const client = new JobClient<Jobs>({ queue, events, store, defaults: { timeoutMs: 30_000, maxAttempts: 3 } });

  const running = new Map<string, number>();
  const jobWorker = new Map<string, string>();
  pool.on("workerStateChanged", ({ workerId, to, reason }) => {
    board.worker(workerId, { state: to });
    if (to === "unhealthy") board.event(`${workerId} evicted: ${reason ?? "health checks failed"}`);
  });
  health.on("workerRecovered", ({ workerId }) => board.event(`${workerId} passed its health checks again and is back in the pool`));
  dispatcher.on("jobStarted", ({ job, attempt, workerId }) => {
    jobWorker.set(job.id, workerId);
    running.set(workerId, (running.get(workerId) ?? 0) + 1);
    board.worker(workerId, { running: running.get(workerId) });
    board.job(job.id, { state: "running", worker: workerId, attempt, progress: 0, note: "" });
  });
  const finished = (workerId: string | undefined) => {
    if (workerId === undefined) return;
    running.set(workerId, Math.max(0, (running.get(workerId) ?? 1) - 1));
    board.worker(workerId, { running: running.get(workerId) });
  };
  dispatcher.on("jobCompleted", ({ workerId }) => finished(workerId));
  dispatcher.on("jobFailed", ({ workerId }) => finished(workerId));
  dispatcher.on("jobCancelled", ({ workerId, started }) => started && finished(workerId));
  dispatcher.on("jobRetrying", ({ job, workerId, error, delayMs }) => {
    finished(workerId);
    board.job(job.id, { state: "retrying", note: `${error.code}, again in ${delayMs} ms` });
  });
  dispatcher.on("error", ({ error }) => board.event(`dispatcher: ${error.message}`));

  health.start();
  await dispatcher.start();

  // Twenty builds of mixed length: 3 to 12 steps of 150 to 350 ms.
  const handles: JobHandle<BuildResult>[] = [];
  const services = ["api", "web", "auth", "billing", "search", "mailer", "gateway", "reports", "ingest", "media"];
  for (let i = 0; i < JOBS; i++) {
    const service = `${services[i % services.length]}-${Math.floor(i / services.length) + 1}`;
    const payload = { service, steps: 3 + ((i * 7) % 10), stepMs: 150 + ((i * 53) % 200) };
    const handle = await client.submit({ type: "build", payload });
    handles.push(handle);
    board.job(handle.id, { label: `build ${service}`, state: "queued" });
    handle.on("progress", ({ progress, message }) => board.job(handle.id, { progress, note: message ?? "" }));
    handle.on("state", ({ state, attempt }) => {
      if (state === "completed" || state === "failed" || state === "cancelled") {
        board.job(handle.id, state === "completed" ? { state, attempt, progress: 1 } : { state, attempt });
      }
    });
  }

  // Cancel one long job once it is running.
  const victim = handles[9]!;
  const cancelDone = (async () => {
    while (victim.state !== "running") {
      if (victim.state !== "queued" && victim.state !== "retrying") return;
      await sleep(50);
    }
    await sleep(600);
    board.event(`cancelling ${victim.id.slice(0, 8)} (build ${services[9]}-1) mid-run`);
    await victim.cancel("requested");
  })();

  // Freeze the worker running the most jobs: its pings stop, health checks time out, the pool
  // evicts it, and its jobs are retried on the others. Thaw it later: it comes back by itself.
  const freezeDone = (async () => {
    await sleep(1500);
    const target = workers.reduce((a, b) => ((running.get(a.id) ?? 0) >= (running.get(b.id) ?? 0) ? a : b));
    board.event(`freezing ${target.id} (SIGSTOP) with ${running.get(target.id) ?? 0} jobs on it`);
    target.child.kill("SIGSTOP");
    await sleep(3500);
    board.event(`thawing ${target.id} (SIGCONT)`);
    target.child.kill("SIGCONT");
    return target.id;
  })();

  const outcomes = await Promise.all(
    handles.map((handle) =>
      handle.result({ timeoutMs: 120_000 }).then(
        (result) => ({ handle, status: "completed" as const, result }),
        (error: unknown) => ({ handle, status: OrchestratorError.from(error).code === "canceled" ? ("cancelled" as const) : ("failed" as const), error }),
      ),
    ),
  );
  await cancelDone;
  const frozen = await freezeDone;
  // Give the thawed worker time to pass its recovery checks, so the summary shows it back.
  for (let i = 0; i < 40 && pool.get(frozen)?.state === "unhealthy"; i++) await sleep(100);
  board.stop();

  // Summary.
  const rows = outcomes.map(({ handle, status }) => ({
    job: board.rows().find((row) => row.id === handle.id)?.label ?? handle.id,
    status,
    attempts: handle.attempt,
    worker: jobWorker.get(handle.id) ?? "-",
  }));
  const completed = rows.filter((r) => r.status === "completed").length;
  const cancelled = rows.filter((r) => r.status === "cancelled").length;
  const failed = rows.filter((r) => r.status === "failed").length;
  const retried = rows.filter((r) => r.attempts > 1);
  console.log("\nSummary");
  console.log(`  ${"job".padEnd(22)} ${"outcome".padEnd(10)} ${"attempts".padEnd(9)} last worker`);
  for (const row of rows) console.log(`  ${row.job.padEnd(22)} ${row.status.padEnd(10)} ${String(row.attempts).padEnd(9)} ${row.worker}`);
  console.log(
    `\n  ${completed} completed, ${cancelled} cancelled, ${failed} failed; ${retried.length} retried after ${frozen} was evicted; ` +
      `${frozen} is ${pool.get(frozen)?.state}; ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );

  const ok = completed === JOBS - 1 && cancelled === 1 && failed === 0 && retried.length > 0;
  if (!ok) console.error("\nThe demo did not end as expected (19 completed, 1 cancelled, at least one retried).");
  if (keepConsole) {
    console.log(`\nThe orchestrator and its console keep running at ${operatorConsole.url} — submit \`build\` jobs from the page (payload {"service":"api","steps":5,"stepMs":300}). Ctrl-C stops.`);
    await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
  }

  await operatorConsole.close();
  await dispatcher.close({ signal: AbortSignal.timeout(5000) });
  await health.close();
  await client.close();
  await pool.close();
  await store.close();
  await closeQueue();
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.child.exitCode !== null || w.child.signalCode !== null) return resolve();
          w.child.once("exit", () => resolve());
          w.child.kill("SIGTERM");
        }),
    ),
  );

  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
