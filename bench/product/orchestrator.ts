/**
 * Product orchestrator process: `AmqpQueue`/`AmqpEvents` → `Dispatcher` → `WorkerPool` of
 * `GrpcTransport`s to the worker processes, with a `HealthMonitor` (defaults), composed as a user
 * would. Its CPU is the bench's `cpu_us_per_job.orchestrator`.
 * Args: --queue NAME --workers host:port,host:port --slots N
 */
import "./telemetry-mode.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { HealthMonitor } from "../../src/health/health-monitor.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { childArgs, sendEvent, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { openAmqp } from "./amqp.ts";
import { discoverWorkers } from "./discovery-mode.ts";
import { benchStore } from "./store-mode.ts";
import { DispatchTrace } from "./trace.ts";

const args = childArgs();
const slots = Number(args.slots ?? 16);
let completed = 0;
let failed = 0;
let retried = 0;
let lastCompletedAt = 0;

try {
  const amqp = await openAmqp(args.queue!, "orchestrator", (source, error) => sendEvent("amqpError", { source, message: error.message, at: nowMs() }));
  const pool = new WorkerPool();
  const addWorker = ({ id, address }: { id: string; address: string }): null => {
    pool.add({ id, transport: new GrpcTransport({ address }), slots });
    return null;
  };
  const addresses = (args.workers ?? "").split(",").filter(Boolean);
  // With discovery on (the features section), the workers announce themselves instead.
  const discovery = await discoverWorkers(pool, amqp.connection, slots);
  if (discovery === undefined) addresses.forEach((address, i) => addWorker({ id: `w${i}`, address }));
  const monitor = new HealthMonitor({ target: pool });
  // BENCH_TRACE (bench/latency-trace.ts): timestamps along the dispatch path; never in a measured run.
  const trace = process.env.BENCH_TRACE ? new DispatchTrace() : undefined;
  const store = benchStore();
  const dispatcher = new Dispatcher({ queue: trace?.queue(amqp.queue) ?? amqp.queue, events: trace?.events(amqp.events) ?? amqp.events, pool, ...(store === undefined ? {} : { store }) });
  if (trace) dispatcher.on("jobStarted", trace.jobStarted);
  dispatcher.on("jobCompleted", () => {
    completed++;
    lastCompletedAt = nowMs();
  });
  dispatcher.on("jobFailed", () => failed++);
  dispatcher.on("jobRetrying", ({ job, attempt, workerId, error, delayMs }) => {
    retried++;
    sendEvent("retrying", { jobId: job.id, attempt, workerId, code: error.code, delayMs, at: nowMs() });
  });
  dispatcher.on("error", ({ error }) => sendEvent("dispatcherError", { code: error.code, message: error.message, at: nowMs() }));
  if (process.env.BENCH_DEBUG) {
    // Every dispatcher event to the parent: for diagnosing a bench run, never in a measured one.
    for (const name of ["jobStarted", "jobCompleted", "jobFailed", "jobCancelled", "jobDeadLettered", "jobDeferred"] as const) {
      dispatcher.on(name, (e: { job: { id: string }; attempt: number; workerId?: string; error?: { code: string; message: string }; reason?: string }) =>
        sendEvent(name, { jobId: e.job.id, attempt: e.attempt, workerId: e.workerId, error: e.error?.message, reason: e.reason, at: nowMs() }),
      );
    }
  }
  // Health transitions only: idle <-> busy happens per job and would put IPC on the measured path.
  pool.on("workerStateChanged", ({ workerId, from, to }) => {
    if (to !== "idle" && to !== "busy") sendEvent("workerState", { workerId, from, to, at: nowMs() });
  });

  serveChild(
    {
      start: async () => {
        monitor.start();
        if (discovery !== undefined) {
          // Every worker found and admitted before the first job, as with the static list.
          const deadline = Date.now() + 20_000;
          while (pool.capacity < addresses.length * slots) {
            if (Date.now() > deadline) throw new Error(`discovery admitted ${pool.capacity / slots} of ${addresses.length} workers within 20 s`);
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
        await dispatcher.start();
        return null;
      },
      addWorker,
      removeWorker: async ({ id }: { id: string }) => {
        await pool.remove(id);
        return null;
      },
      trace: () => {
        if (!trace) throw new Error("the orchestrator runs without BENCH_TRACE");
        return trace.take();
      },
      stats: () => ({ completed, failed, retried, lastCompletedAt, running: dispatcher.running, capacity: pool.capacity }),
    },
    {
      onExit: async () => {
        await dispatcher.close({ signal: AbortSignal.timeout(1000) }).catch(() => {});
        await discovery?.close();
        await monitor.close();
        await pool.close();
        await amqp.close();
      },
    },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
