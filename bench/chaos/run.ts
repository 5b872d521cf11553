/**
 * `npm run chaos`: N jobs through the real product (a JobClient producer process → RabbitMQ → two
 * dispatcher processes, each behind its own TCP fault proxy → four gRPC worker processes) while a
 * seeded scheduler kills workers (SIGKILL, restarted on the same port), freezes one (SIGSTOP, then
 * SIGCONT), cuts and black-holes each dispatcher's broker connection and restores it, and kills a
 * dispatcher (SIGKILL, restarted). Then it checks every job from the producer's side and, from the
 * append-only logs of every process, which jobs ran more than once and which fault explains it.
 *
 *   npm run chaos                              # 10,000 jobs, seed 1
 *   npm run chaos -- --jobs 500 --seed 7 --rate 25 --handler-ms 20-200 --out /tmp/chaos.json
 *   npm run chaos -- --cluster                 # on a private three-node RabbitMQ cluster, adding node faults
 *   npm run chaos -- --cluster --faults nodes  # only the node faults
 *
 * With --cluster the run starts three private RabbitMQ nodes (`RabbitMqNodes`, beside the
 * machine's broker), the producer on node 0 and each dispatcher on a node of its own (with all
 * three nodes in its URL list, each behind a proxy), and adds to the faults a kill -9 of the job
 * queue's leader node, of another node (each restarted on its data, rejoining the cluster) and a
 * SIGSTOP of a node. The default rate drops to 100/s there, so the node faults (each restart takes
 * 10-30 s) fit in the run.
 *
 * Each job's handler waits a duration drawn from --handler-ms (default 2-40 ms). Jobs are
 * submitted at --rate per second, so the run lasts about jobs / rate seconds; the faults are spread
 * over it. A short run needs longer handlers to keep jobs in flight when the faults strike.
 *
 * Writes bench/results/chaos.json (or --out) and exits 1 when a job is lost (no outcome at the
 * end), failed, or ran more than once without a fault to explain it; 2 on bad arguments or no broker.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { killAllChildren } from "../lib/proc.ts";
import { RabbitMqNodes } from "../../src/testing/broker/rabbitmq-nodes.ts";
import { withChannelAt } from "../../test/helpers/rabbitmq.ts";
import { AMQP_URL, brokerVersion, deleteTopology, freshQueueName } from "../lib/rabbit.ts";
import { machineInfo, writeJson } from "../lib/report.ts";
import { analyse, describeFault, incidentsWithoutFault, parseDispatches, parseWorkerRuns, type DispatchRecord, type FaultRecord, type Incident, type ProducerView, type WorkerRun } from "./analysis.ts";
import { Cluster } from "./cluster.ts";
import { readLogs } from "./log.ts";
import { faultKinds, planFaults } from "./plan.ts";
import type { FaultSet } from "./plan.ts";
import type { ProducerOutcome, ProducerRunSummary } from "./producer.ts";
import { FaultScheduler } from "./scheduler.ts";

const USAGE = "usage: npm run chaos -- [--jobs N] [--seed N] [--rate JOBS_PER_S] [--handler-ms MIN-MAX] [--timeout-s S] [--out FILE] [--keep-logs] [--cluster [--faults all|nodes]]";
const { values: flags } = parseArgs({
  options: {
    jobs: { type: "string", default: "10000" },
    seed: { type: "string", default: "1" },
    rate: { type: "string" },
    cluster: { type: "boolean", default: false },
    faults: { type: "string", default: "all" },
    "handler-ms": { type: "string", default: "2-40" },
    "timeout-s": { type: "string" },
    out: { type: "string" },
    "keep-logs": { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}

function intFlag(name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`Expected --${name} to be an integer from ${min} to ${max}, got ${JSON.stringify(value)}\n${USAGE}`);
    process.exit(2);
  }
  return n;
}

const JOBS = intFlag("jobs", flags.jobs, 1, 1_000_000);
const SEED = intFlag("seed", flags.seed, 0, 2 ** 32 - 1);
const CLUSTER = flags.cluster ?? false;
const RATE = intFlag("rate", flags.rate ?? (CLUSTER ? "100" : "250"), 1, 100_000);
if (flags.faults !== "all" && flags.faults !== "nodes") {
  console.error(`Expected --faults to be all or nodes, got ${JSON.stringify(flags.faults)}\n${USAGE}`);
  process.exit(2);
}
if (flags.faults === "nodes" && !CLUSTER) {
  console.error(`--faults nodes needs --cluster\n${USAGE}`);
  process.exit(2);
}
const FAULT_SET = flags.faults as FaultSet;
const KINDS = faultKinds({ cluster: CLUSTER, set: FAULT_SET });
const [MIN_MS, MAX_MS] = (flags["handler-ms"] ?? "").split("-").map((v, i) => intFlag(i === 0 ? "handler-ms (min)" : "handler-ms (max)", v, 0, 60_000)) as [number, number];
if (MAX_MS === undefined || MAX_MS < MIN_MS) {
  console.error(`Expected --handler-ms to be MIN-MAX with MIN <= MAX, got ${JSON.stringify(flags["handler-ms"])}\n${USAGE}`);
  process.exit(2);
}
const SUBMIT_MS = (JOBS * 1000) / RATE;
const TIMEOUT_MS = 1000 * intFlag("timeout-s", flags["timeout-s"] ?? String(Math.ceil((SUBMIT_MS * 1.5) / 1000) + 90), 10, 86_400);
const OUT = flags.out ?? fileURLToPath(new URL("../results/chaos.json", import.meta.url));
const CONFIG = {
  workers: 4,
  workerSlots: 8,
  dispatchers: 2,
  heartbeatSec: 2,
  handlerMs: [MIN_MS, MAX_MS] as const,
  maxAttempts: 10,
  /** Longest wait, once every result is in, for the system to go quiet (late duplicates). */
  settleMs: 20_000,
};

const startedAt = Date.now();
const elapsed = (t = Date.now()) => `${((t - startedAt) / 1000).toFixed(1).padStart(6)} s`;
const say = (line: string) => console.log(`[${elapsed()}] ${line}`);

let brokers: RabbitMqNodes | undefined;
/** When the run's time bound starts: now, or once the private cluster is up. */
let runStartedAt = startedAt;
if (CLUSTER) {
  if (!RabbitMqNodes.available()) {
    console.error("--cluster needs a RabbitMQ installation to start private nodes from (rabbitmq-server in RABBITMQ_BIN_DIR or /usr/lib/rabbitmq/bin)");
    process.exit(2);
  }
  say("starting a private three-node RabbitMQ cluster…");
  brokers = await RabbitMqNodes.start({ nodes: 3 }).catch((error: unknown) => {
    console.error(`could not start the private RabbitMQ cluster: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(2);
  });
  // The run's time bound counts from here: starting the nodes took 20-70 s on this machine.
  runStartedAt = Date.now();
  say(`cluster up: ${brokers.nodes.map((n) => `n${n.index} ${n.name} :${n.amqpPort}`).join(", ")}`);
}
const version = await brokerVersion(3000, brokers?.urls[0] ?? AMQP_URL);
if (version === undefined) {
  console.error("RabbitMQ is not answering at 127.0.0.1:5672: the chaos run needs it (start it: rabbitmq-server -detached)");
  await brokers?.close();
  process.exit(2);
}

const queue = freshQueueName("chaos");
const logDir = mkdtempSync(join(tmpdir(), "blacktree-chaos-"));
/** Faults nobody injected: the producer's direct broker link dropped (see `FaultRecord`). */
const observed: FaultRecord[] = [];
const cluster = new Cluster({ queue, logDir, workers: CONFIG.workers, workerSlots: CONFIG.workerSlots, dispatchers: CONFIG.dispatchers, heartbeatSec: CONFIG.heartbeatSec, ...(brokers ? { brokers } : {}) });
let scheduler: FaultScheduler | undefined;
let cleaning: Promise<void> | undefined;
/** Stops the faults, every process and the proxies, and deletes the run's broker objects. Once. */
const cleanup = (): Promise<void> =>
  (cleaning ??= (async () => {
    await scheduler?.stop().catch(() => {});
    await cluster.close();
    if (brokers) await brokers.close();
    else await deleteTopology(queue, { known: [queue] });
  })());
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping every process and deleting ${queue}`);
    const force = setTimeout(() => process.exit(130), 15_000);
    void cleanup().finally(() => {
      clearTimeout(force);
      process.exit(130);
    });
  });
}
process.once("exit", () => killAllChildren());
// The last bound: whatever hangs, the run ends (cleaning up) a minute past its timeout.
setTimeout(() => {
  console.error(`chaos run still going ${TIMEOUT_MS / 1000 + 60} s after its start: stopping everything`);
  void cleanup().finally(() => process.exit(1));
}, runStartedAt + TIMEOUT_MS + 60_000 - Date.now()).unref();

let exitCode = 1;
let ok = false;
try {
  say(`chaos: ${JOBS} jobs at ${RATE}/s, seed ${SEED}, RabbitMQ ${version}${brokers ? " (private 3-node cluster)" : ""}, queue ${queue}, logs ${logDir}`);
  await cluster.start();
  say(`up: ${CONFIG.workers} workers × ${CONFIG.workerSlots} slots (ports ${cluster.workers.map((w) => w.port).join(", ")}), ${CONFIG.dispatchers} dispatchers behind proxies (ports ${cluster.dispatchers.map((d) => d.proxies.map((p) => p.port).join("/")).join(", ")})`);
  if (brokers) say(`job queue leader: n${(await brokers.queueLeader(queue)) ?? "?"}`);

  const plan = planFaults({ seed: SEED, submitMs: SUBMIT_MS, workers: CONFIG.workers, dispatchers: CONFIG.dispatchers, nodes: brokers ? 3 : 0, set: FAULT_SET });
  const t0 = Date.now();
  const deadlineAt = runStartedAt + TIMEOUT_MS - CONFIG.settleMs;
  scheduler = new FaultScheduler(cluster, plan, { t0, log: say });
  let lastProgress = 0;
  cluster.producer!.onEvent(({ name, data }) => {
    if (name === "link") {
      const link = data as { state: string; at: number; message: string };
      const open = observed.at(-1);
      if (link.state === "disconnected" && (open === undefined || open.endedAt !== undefined)) {
        observed.push({ id: 1001 + observed.length, kind: "broker_outage", target: "broker", at: link.at, note: link.message });
        say(`observed, not injected: the producer's broker link dropped (${link.message})`);
      } else if (link.state === "reconnected" && open !== undefined && open.endedAt === undefined) {
        open.endedAt = link.at;
        say("observed: the producer's broker link is back");
      }
      return;
    }
    if (name !== "progress" || Date.now() - lastProgress < 5000) return;
    lastProgress = Date.now();
    const p = data as { submitted: number; completed: number; pending: number };
    say(`progress: ${p.submitted} submitted, ${p.completed} completed, ${p.pending} pending`);
  });
  scheduler.start();
  const summary = await cluster.producer!.request<ProducerRunSummary>(
    "run",
    { jobs: JOBS, rate: RATE, seed: SEED, minMs: CONFIG.handlerMs[0], maxMs: CONFIG.handlerMs[1], maxAttempts: CONFIG.maxAttempts, deadlineAt },
    deadlineAt - Date.now() + 30_000,
  );
  say(`producer: ${summary.settled} of ${JOBS} outcomes known${summary.timedOut ? " (timed out)" : ""}; stopping the faults`);
  await scheduler.stop();
  const settle = await settleDown(Math.min(CONFIG.settleMs, runStartedAt + TIMEOUT_MS - Date.now()));
  say(settle.quiet ? `quiet after ${(settle.ms / 1000).toFixed(1)} s` : `not quiet after ${(settle.ms / 1000).toFixed(1)} s: ${settle.why}`);

  const outcomes = await cluster.producer!.request<ProducerOutcome[]>("outcomes", {}, 60_000);
  const views: ProducerView[] = outcomes.map(([jobId, status, , resultPid, resultAttempt, resultEvents]) => ({ jobId, status, resultPid, resultAttempt, resultEvents }));
  // Jobs never submitted (the deadline came first) count as lost too.
  const lostIds = [...outcomes.filter((o) => o[1] === "pending").map((o) => o[0]), ...Array.from({ length: Math.max(0, JOBS - outcomes.length) }, (_, i) => `chaos-${outcomes.length + i}`)];
  const failed = outcomes.filter((o) => o[1] === "failed" || o[1] === "cancelled");
  const deadLetters = lostIds.length + failed.length > 0 ? await cluster.producer!.request<Array<{ jobId: string | null; reason: string }>>("deadLetters", {}, 30_000).catch((e: Error) => [{ jobId: null, reason: `could not read: ${e.message}` }]) : [];

  // Where a lost job may sit: the broker's view of every queue, consumer and channel, read
  // before the cluster goes down (a job confirmed but never delivered, or held unacked).
  const brokerState = lostIds.length > 0 && brokers ? await readBrokerState(brokers) : null;

  // An outage still open at the end lasted until then.
  for (const o of observed) o.endedAt ??= Date.now();
  const faults = [...scheduler.faults, ...observed];
  const { runs, dispatches, incidents } = readRunLogs(faults);
  const analysis = analyse({ runs, dispatches, faults, producer: views, uncertainSubmits: summary.uncertainSubmits, t0 });
  const detailOf = (jobId: string) => ({
    jobId,
    runs: runs.filter((r) => r.jobId === jobId).map((r) => ({ attempt: r.attempt, worker: r.worker, pid: r.pid, started_s: (r.startedAt - t0) / 1000, end: r.end })),
    dispatches: dispatches.filter((d) => d.jobId === jobId).map((d) => ({ attempt: d.attempt, dispatcher: `${d.dispatcher}#${d.incarnation}`, worker: d.workerId, at_s: (d.at - t0) / 1000 })),
    dead_letter: deadLetters.find((d) => d.jobId === jobId)?.reason ?? null,
  });
  const describeRecord = (f: FaultRecord) => ({
    id: f.id,
    kind: f.kind,
    target: f.target,
    at: new Date(f.at).toISOString(),
    at_s: (f.at - t0) / 1000,
    ended_s: f.endedAt === undefined ? null : (f.endedAt - t0) / 1000,
    pid: f.pid ?? null,
    new_pid: f.newPid ?? null,
    runs_in_flight: analysis.runsHitByFault.get(f.id) ?? 0,
    ...(f.incarnation === undefined ? {} : { incarnation: f.incarnation }),
    ...(f.note === undefined ? {} : { note: f.note }),
    description: describeFault(f, t0),
  });
  const confirmed = new Set(outcomes.filter((o) => o[8]).map((o) => o[0]));
  const brokerLost = lostByBroker(lostIds, confirmed, brokerState, deadLetters);
  const completed = outcomes.filter((o) => o[1] === "completed").length;
  const injectedKinds = new Set(faults.map((f) => f.kind));
  const problems = [
    ...(lostIds.length > brokerLost.jobs.length ? [`${lostIds.length - brokerLost.jobs.length} job(s) lost (no outcome at the end)`] : []),
    ...(failed.length > 0 ? [`${failed.length} job(s) failed or cancelled`] : []),
    ...(analysis.unexplained.length > 0 ? [`${analysis.unexplained.length} job(s) ran more than once (or completed more often than they ran) without a fault to explain it`] : []),
    ...(analysis.resultsWithoutRun.length > 0 ? [`${analysis.resultsWithoutRun.length} result(s) name a run no worker log shows completing`] : []),
    ...(analysis.fencingViolations.length > 0 ? [`${analysis.fencingViolations.length} job(s) where a later run held a smaller fencing token`] : []),
    ...scheduler.recoveryErrors.map((e) => `recovery failed: ${e}`),
  ];
  ok = problems.length === 0;
  const lastResultAt = summary.lastResultAt || Date.now();
  const report = {
    schema: 1,
    date: new Date(startedAt).toISOString(),
    command: `npm run chaos -- --jobs ${JOBS} --seed ${SEED} --rate ${RATE} --handler-ms ${MIN_MS}-${MAX_MS}${CLUSTER ? ` --cluster --faults ${FAULT_SET}` : ""}`,
    machine: { ...machineInfo(), rabbitmq: version },
    ok,
    problems,
    seed: SEED,
    setup: {
      queue,
      jobs: JOBS,
      rate_per_s: RATE,
      workers: CONFIG.workers,
      worker_slots: CONFIG.workerSlots,
      dispatchers: CONFIG.dispatchers,
      slots_per_worker_per_dispatcher: Math.floor(CONFIG.workerSlots / CONFIG.dispatchers),
      handler_ms: CONFIG.handlerMs,
      max_attempts: CONFIG.maxAttempts,
      amqp_heartbeat_s: CONFIG.heartbeatSec,
      path: brokers
        ? "JobClient (producer process, on node 0) → quorum queue on a private 3-node RabbitMQ cluster → 2 Dispatcher processes (d0 on node 1, d1 on node 2, each with all three nodes in its URL list behind its own TCP fault proxies, HealthMonitor 1 s) → GrpcTransport → 4 serveWorker processes"
        : "JobClient (producer process) → RabbitMQ quorum queue → 2 Dispatcher processes (each through its own TCP fault proxy, HealthMonitor 1 s) → GrpcTransport → 4 serveWorker processes",
      cluster: brokers ? brokers.nodes.map((n) => ({ node: `n${n.index}`, name: n.name, amqp_port: n.amqpPort })) : null,
      fault_set: FAULT_SET,
    },
    jobs: JOBS,
    completed,
    failed: failed.length,
    lost: lostIds.length,
    // Lost jobs the broker confirmed to the producer and then held nowhere, before any dispatcher
    // received them (see lostByBroker): counted in `lost`, not among the problems.
    lost_by_broker: brokerLost,
    duplicate_completions: analysis.duplicateCompletions,
    ran_more_than_once: analysis.ranMoreThanOnce,
    jobs_with_overlapping_runs: analysis.ranMoreThanOnce.filter((d) => d.overlapping).length,
    // Two runs of one job inside their handlers at once (from the worker logs): what fencing guards.
    overlap_windows: {
      count: analysis.overlapWindows.length,
      max_ms: analysis.overlapWindows.reduce((max, w) => Math.max(max, w.ms), 0),
      windows: analysis.overlapWindows.slice(0, 100),
    },
    fencing: { jobs_checked: analysis.fencingChecked, violations: analysis.fencingViolations, resubmitted: analysis.fencingResubmitted, stale_handoffs: analysis.fencingStale },
    unexplained_duplicates: analysis.unexplained,
    faults_observed: observed.map((f) => ({ ...describeRecord(f), note: f.note ?? null })),
    faults_injected: scheduler.faults.map(describeRecord),
    incidents_without_fault: incidents.map((i) => ({ ...i, at_s: (i.at - t0) / 1000 })),
    faults_by_kind: Object.fromEntries(KINDS.map((k) => [k, faults.filter((f) => f.kind === k).length])),
    faults_skipped: scheduler.skipped.map((s) => ({ kind: s.kind, planned_at_s: s.atMs / 1000, reason: s.reason })),
    all_fault_kinds_injected: KINDS.every((k) => injectedKinds.has(k)),
    flow_after_faults: faults.map((f) => {
      const end = f.endedAt ?? f.at;
      const done = runs.filter((r) => r.end === "completed" && r.endedAt !== undefined);
      return { id: f.id, kind: f.kind, completed_while_active: done.filter((r) => r.endedAt! > f.at && r.endedAt! <= end).length, completed_after: done.filter((r) => r.endedAt! > end).length };
    }),
    timings: {
      total_s: (Date.now() - startedAt) / 1000,
      startup_s: (t0 - startedAt) / 1000,
      submit_s: (summary.lastSubmitAt - summary.firstSubmitAt) / 1000,
      first_submit_to_last_result_s: (lastResultAt - summary.firstSubmitAt) / 1000,
      settle_s: settle.ms / 1000,
      quiet_at_end: settle.quiet,
      jobs_per_s: completed / Math.max(0.001, (lastResultAt - summary.firstSubmitAt) / 1000),
    },
    details: {
      worker_runs: analysis.runs,
      jobs_that_ran: analysis.jobsRun,
      runs_without_dispatch_record: analysis.unmatchedRuns,
      resubmits: summary.resubmits,
      uncertain_submits: summary.uncertainSubmits,
      results_without_completed_run: analysis.resultsWithoutRun.slice(0, 100),
      lost_jobs: lostIds.slice(0, 100).map(detailOf),
      submit_errors: summary.submitErrors,
      last_submits: Object.fromEntries(lostIds.slice(0, 100).map((id) => [id, summary.lastTries[id] ?? null])),
      broker_state: brokerState,
      failed_jobs: failed.slice(0, 100).map((o) => ({ ...detailOf(o[0]), status: o[1], error: o[7] })),
      logs: ok && !flags["keep-logs"] ? null : logDir,
      pids: cluster.pids,
    },
  };
  writeJson(OUT, report);
  printSummary(report, analysis.ranMoreThanOnce.length);
  console.log(`\nwritten: ${OUT}`);
  exitCode = ok ? 0 : 1;
} catch (error) {
  console.error(`chaos run failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  exitCode = 1;
} finally {
  await cleanup();
  if (ok && !flags["keep-logs"]) rmSync(logDir, { recursive: true, force: true });
  else console.log(`logs kept in ${logDir}`);
}
process.exit(exitCode);

/**
 * Reads every worker's runs and every dispatcher's hand-offs from the logs, and the link drops and
 * worker evictions no injected fault accounts for.
 */
function readRunLogs(faults: readonly FaultRecord[]): { runs: WorkerRun[]; dispatches: DispatchRecord[]; incidents: Incident[] } {
  const runs: WorkerRun[] = [];
  const byWorkerFile = new Map<string, string[][]>();
  for (const { file, fields } of readLogs(logDir, /^worker-\d+\.log$/)) {
    const list = byWorkerFile.get(file);
    if (list) list.push(fields);
    else byWorkerFile.set(file, [fields]);
  }
  for (const [file, lines] of byWorkerFile) {
    const pid = Number(/^worker-(\d+)\.log$/.exec(file)![1]);
    runs.push(...parseWorkerRuns(pid, cluster.workerOfPid(pid), lines));
  }
  const dispatches: DispatchRecord[] = [];
  const incidents: Incident[] = [];
  const byDispatcherFile = new Map<string, string[][]>();
  for (const { file, fields } of readLogs(logDir, /^dispatcher-d\d+-\d+\.log$/)) {
    const list = byDispatcherFile.get(file);
    if (list) list.push(fields);
    else byDispatcherFile.set(file, [fields]);
  }
  for (const [file, lines] of byDispatcherFile) {
    const [, slot, incarnation] = /^dispatcher-(d\d+)-(\d+)\.log$/.exec(file)!;
    dispatches.push(...parseDispatches(slot!, Number(incarnation), lines));
    incidents.push(...incidentsWithoutFault(slot!, Number(incarnation), lines, faults, 3000));
  }
  return { runs, dispatches, incidents };
}

/**
 * Waits until nothing moves any more, so duplicates still on their way are counted: the job
 * queue has no ready message, every dispatcher holds no job, and no worker log grew for 3 s (a
 * retry waits at most 2 s in a delay queue).
 */
async function settleDown(limitMs: number): Promise<{ quiet: boolean; ms: number; why: string }> {
  const begin = Date.now();
  let lastSize = -1;
  let stableSince = Date.now();
  let why = "";
  while (Date.now() - begin < limitMs) {
    const size = readLogs(logDir, /^worker-\d+\.log$/).length;
    if (size !== lastSize) {
      lastSize = size;
      stableSince = Date.now();
    }
    const url = brokers ? brokers.nodes.find((n) => n.state === "running")?.url : AMQP_URL;
    const ready = url === undefined ? -1 : await withChannelAt(url, async (ch) => (await ch.checkQueue(queue)).messageCount).catch(() => -1);
    const idle = await Promise.all(
      cluster.dispatchers.map((d) => (d.child && !d.child.dead ? d.child.request<{ idle: boolean }>("idle", {}, 5000).then((r) => r.idle, () => false) : Promise.resolve(true))),
    );
    why = `${ready} ready in the queue, dispatchers idle: ${idle.join("/")}, worker logs still for ${Date.now() - stableSince} ms`;
    if (ready === 0 && idle.every(Boolean) && Date.now() - stableSince >= 3000) return { quiet: true, ms: Date.now() - begin, why };
    await sleep(500);
  }
  return { quiet: false, ms: Date.now() - begin, why };
}

/**
 * The lost jobs that the broker lost, by evidence the run can show: the producer's publish was
 * confirmed (the job has a handle), no dispatcher was ever handed it (no `recv` line in
 * any dispatcher log), it is not dead-lettered, and at the end no queue a job can wait in (the
 * job queue, its lanes, delay and key queues) holds a message, ready or unacknowledged. Nothing
 * of ours acks a message it did not hand to a handler without first publishing a confirmed copy
 * (hand-back, key routing) or dead-lettering it. RabbitMQ 3.10 quorum queues were seen doing this
 * while the job queue's leader node was down (see docs/rabbitmq.md, "Confirmed publishes lost in a
 * leader failover"). A job with no outcome while any such queue still holds a message is not
 * counted here: it may be that message.
 */
function lostByBroker(
  lostIds: readonly string[],
  confirmed: ReadonlySet<string>,
  state: Record<string, unknown> | null,
  deadLetters: ReadonlyArray<{ jobId: string | null }>,
): { jobs: string[]; evidence: string } {
  const none = (why: string) => ({ jobs: [], evidence: why });
  if (lostIds.length === 0) return none("nothing lost");
  if (state === null) return none("no broker state was read (not a cluster run)");
  const jobQueue = new RegExp(`^${queue.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(\\.(p\\d|delay\\..+|keys\\..+))?$`);
  // Every node's view must show the job queues empty, and every node of the cluster must answer.
  const byNode = (state.queues_by_node ?? {}) as Record<string, unknown>;
  if (Object.keys(byNode).length < 3) return none(`only ${Object.keys(byNode).length} of the 3 nodes listed their queues`);
  for (const [node, queues] of Object.entries(byNode)) {
    if (!Array.isArray(queues)) return none(`${node} could not list its queues: ${JSON.stringify(queues)}`);
    let held = 0;
    for (const q of queues as Array<{ name: string; messages_ready?: unknown; messages_unacknowledged?: unknown }>) {
      if (!jobQueue.test(q.name)) continue;
      // A queue whose members cannot answer lists no counts: unreadable is not empty.
      const ready = Number(q.messages_ready);
      const unacked = Number(q.messages_unacknowledged);
      const unreadable = (v: unknown) => v === "" || v === null || v === undefined;
      if (unreadable(q.messages_ready) || unreadable(q.messages_unacknowledged) || !Number.isFinite(ready) || !Number.isFinite(unacked)) return none(`${node} could not count queue ${q.name}`);
      held += ready + unacked;
    }
    if (held > 0) return none(`the job queues still hold ${held} message(s) as ${node} sees them`);
  }
  const received = new Set<string>();
  for (const { fields } of readLogs(logDir, /^dispatcher-d\d+-\d+\.log$/)) if (fields[0] === "recv") received.add(fields[2]!);
  const deadLettered = new Set(deadLetters.map((d) => d.jobId));
  // Only jobs whose submit the broker confirmed: one never submitted (the deadline came first) or
  // never reached by the producer is no broker's loss.
  const jobs = lostIds.filter((id) => confirmed.has(id) && !received.has(id) && !deadLettered.has(id));
  return {
    jobs,
    evidence: `as ${String(state.node)} see it, no job queue holds a message (ready or unacknowledged); ${jobs.length} of ${lostIds.length} lost job(s) were confirmed to the producer and never handed to a dispatcher`,
  };
}

/**
 * What the running nodes say of queues (each node asked: a node just back may see a quorum
 * queue's counts late), and the first one of consumers and channels (`rabbitmqctl`, JSON rows).
 */
async function readBrokerState(nodes: RabbitMqNodes): Promise<Record<string, unknown>> {
  const running = nodes.nodes.filter((n) => n.state === "running").map((n) => n.index);
  if (running.length === 0) return { error: "no node running" };
  const read = async (index: number, args: string[]): Promise<unknown> => {
    try {
      return JSON.parse(await nodes.ctl(index, ...args, "--quiet", "--formatter", "json"));
    } catch (error) {
      return { error: (error as Error).message };
    }
  };
  const queueFields = ["list_queues", "name", "type", "messages_ready", "messages_unacknowledged", "consumers", "leader", "members", "online"];
  const byNode: Record<string, unknown> = {};
  for (const index of running) byNode[`n${index}`] = await read(index, queueFields);
  const first = running[0]!;
  return {
    node: running.map((i) => `n${i}`).join(", "),
    queues_by_node: byNode,
    consumers: await read(first, ["list_consumers", "queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "activity_status"]),
    channels: await read(first, ["list_channels", "pid", "connection", "number", "consumer_count", "messages_unacknowledged", "messages_unconfirmed", "prefetch_count"]),
  };
}

function printSummary(report: Record<string, any>, duplicates: number): void {
  console.log("\nfaults injected:");
  for (const f of report.faults_injected as Array<{ description: string; runs_in_flight: number }>) console.log(`  ${f.description}: ${f.runs_in_flight} run(s) in flight`);
  for (const s of report.faults_skipped as Array<{ kind: string; reason: string }>) console.log(`  skipped: ${s.kind} (${s.reason})`);
  for (const f of report.faults_observed as Array<{ description: string; runs_in_flight: number; note: string }>) {
    console.log(`  observed, not injected: ${f.description} (${f.note}): ${f.runs_in_flight} run(s) in flight`);
  }
  const rows: Array<[string, unknown]> = [
    ["jobs", report.jobs],
    ["completed", report.completed],
    ["failed", report.failed],
    ["lost", report.lost],
    ["duplicate completions (producer)", report.duplicate_completions],
    ["jobs that ran more than once", duplicates],
    ["  of which unexplained", (report.unexplained_duplicates as unknown[]).length],
    ["faults injected", (report.faults_injected as unknown[]).length],
    ["overlap windows (count)", report.overlap_windows.count],
    ["overlap windows (max ms)", report.overlap_windows.max_ms],
    ["fencing violations", (report.fencing.violations as unknown[]).length],
    ["first submit → last result (s)", report.timings.first_submit_to_last_result_s.toFixed(1)],
    ["total (s)", report.timings.total_s.toFixed(1)],
  ];
  console.log("");
  for (const [label, value] of rows) console.log(`${label.padEnd(34)} ${String(value).padStart(8)}`);
  for (const u of (report.unexplained_duplicates as Array<{ jobId: string; reason: string }>).slice(0, 10)) console.log(`unexplained: ${u.jobId}: ${u.reason}`);
  for (const i of report.incidents_without_fault as Array<{ dispatcher: string; kind: string; at_s: number; detail: string }>) {
    console.log(`warning: ${i.dispatcher} saw ${i.kind} at ${i.at_s.toFixed(2)} s with no fault injected (${i.detail})`);
  }
  const brokerLost = report.lost_by_broker as { jobs: string[]; evidence: string };
  if (brokerLost.jobs.length > 0) console.log(`\nwarning: the broker lost ${brokerLost.jobs.length} confirmed job(s): ${brokerLost.jobs.join(", ")} (${brokerLost.evidence})`);
  console.log(report.ok ? "\nOK: nothing lost by the product, every duplicate run explained by a fault" : `\nFAILED: ${(report.problems as string[]).join("; ")}`);
}
