/**
 * After-the-fact analysis of a chaos run, from the worker and dispatcher logs, the producer's view
 * of every job and the faults injected: which jobs ran more than once, and which fault explains
 * each extra run.
 *
 * A run is one start of the handler (a `S` line of a worker log). Runs of a job are ordered by when
 * their dispatcher handed them to the worker (its `start` line; the worker's own time when no line
 * matches). Each run but the last must have been cut short or duplicated by something, so for each
 * of them the faults that hit it are counted: a fault hits a run when it struck the run's worker
 * process (kill, or a freeze overlapping it) or the run's dispatcher (its connection cut or
 * black-holed, or the process killed) between the run's hand-off (less {@link SLACK_MS}) and the
 * hand-off of the job's next run. A job is explained when at least as many distinct faults hit its
 * runs as it has extra runs (`runs - 1`): one fault sends a job back to the queue once, so a job
 * run three times needs two (a worker kill whose retry's ack a connection cut then lost). A submit
 * sent twice because its first outcome was unknown counts as one. A fault of a broker node (a
 * private cluster's: `node_kill`, `node_freeze`) hits every run in flight while its effects last
 * (the links to that node drop, the job queue may elect a new leader), as an observed broker outage
 * does. A result event the producer received twice for one completed run is explained by its
 * link dropping, or a broker node failing, right after the run (the events queue hands out again
 * an event whose ack was lost). Everything else is an unexplained duplicate.
 *
 * It also measures the overlap windows (two runs of one job inside their handlers at once: how
 * many, how long) and checks the fencing tokens the handlers saw: in the order a job's runs were
 * handed out, a token never shrinks. (In the order they started on workers it may: a stale
 * attempt's assign can reach its worker after the newer attempt started — measured, 13 ms — and
 * that is the overlap a fenced write makes harmless.)
 */
import type { FaultKind } from "./plan.ts";

/**
 * A fault that happened: injected by the scheduler, or `broker_outage`, observed and not injected:
 * the producer's own connection (which goes straight to the broker, through no proxy) dropped, so
 * the broker went away for everyone (restarted by someone else, say). It strikes every dispatcher.
 */
export interface FaultRecord {
  id: number;
  kind: FaultKind | "broker_outage";
  /** `w<i>`, `d<i>`, or `broker`. */
  target: string;
  /** Epoch ms when it was injected. */
  at: number;
  /** Epoch ms when it ended (thaw, restore, restart); absent for instantaneous faults and until it ends. */
  endedAt?: number;
  /** The process it struck (worker faults, dispatcher kill). */
  pid?: number;
  /** The dispatcher incarnation it killed (dispatcher_kill). */
  incarnation?: number;
  /** The process started in place of a killed one. */
  newPid?: number;
  note?: string;
}

/** One start of the handler, read from a worker log. */
export interface WorkerRun {
  jobId: string;
  attempt: number;
  pid: number;
  /** `w<i>`, from the pid (undefined when the pid is not one the run started). */
  worker: string | undefined;
  startedAt: number;
  /** The `ctx.fencingToken` the handler saw (undefined in logs written before it existed). */
  fencingToken?: number;
  end: "completed" | "aborted" | "unknown";
  endedAt?: number;
  abortCode?: string;
}

/** A dispatcher's `start` line: it handed `jobId`/`attempt` to `workerId`. */
export interface DispatchRecord {
  jobId: string;
  attempt: number;
  workerId: string;
  /** `d<i>`. */
  dispatcher: string;
  incarnation: number;
  at: number;
}

/** How the producer saw one job end. */
export interface ProducerView {
  jobId: string;
  status: "completed" | "failed" | "cancelled" | "pending";
  resultPid: number | null;
  resultAttempt: number | null;
  /** `result` events seen for the job (the first and any duplicates). */
  resultEvents: number;
}

/** A run of a job with what is known of it, as reported. */
export interface RunReport {
  attempt: number;
  worker: string | null;
  pid: number;
  dispatcher: string | null;
  /** Seconds from the start of the run to the hand-off to the worker. */
  dispatched_s: number;
  started_s: number;
  /** When the handler completed or was aborted (null when its worker died first). */
  ended_s: number | null;
  ended: string;
  /** Ids of the faults that hit this run (see the module comment). */
  hit_by: number[];
}

/** One job that ran more than once. */
export interface DuplicateReport {
  jobId: string;
  attempts: RunReport[];
  /** The faults that explain the extra runs, described. */
  explained_by: string[];
  extra_runs: number;
  /** Distinct faults that hit its runs (plus one for a submit sent again). */
  hits: number;
  result_events: number;
  /**
   * Whether two of its runs were in their handlers at the same time (possible across dispatchers
   * while a lost delivery's abort is on its way; see `Dispatcher`), as the worker logs show it.
   */
  overlapping: boolean;
  /** Why it is not explained (only in `unexplained_duplicates`). */
  reason?: string;
}

/** What the analysis finds. */
export interface Analysis {
  runs: number;
  jobsRun: number;
  ranMoreThanOnce: DuplicateReport[];
  unexplained: DuplicateReport[];
  duplicateCompletions: number;
  /** Completed results whose (pid, attempt) has no completed run in the logs. */
  resultsWithoutRun: string[];
  /** Worker runs no dispatcher `start` line matches. */
  unmatchedRuns: number;
  /**
   * Per fault id: runs in flight on its target when it struck (handed off, not ended; whether or
   * not they ran again).
   */
  runsHitByFault: Map<number, number>;
  /** Every overlap window: two runs of one job inside their handlers at once, in ms, by job. */
  overlapWindows: Array<{ jobId: string; ms: number }>;
  /** Jobs where a run started later held a smaller fencing token than one started before it. */
  fencingViolations: Array<{ jobId: string; tokens: number[] }>;
  /**
   * Jobs whose tokens went down because the producer sent the job a second time after an unknown
   * outcome: the second message is a new submission whose attempts count from 1 again (without a
   * job store nothing shared can order the two). Reported apart, not as violations.
   */
  fencingResubmitted: Array<{ jobId: string; tokens: number[] }>;
  /**
   * Jobs whose tokens went down because the last run was a stale one: handed out by a dispatcher
   * whose link had been cut, after the broker gave the job to another (see `analyse`). The stale
   * attempt's token is the smaller one, which is what a fenced write refuses. Reported apart.
   */
  fencingStale: Array<{ jobId: string; tokens: number[] }>;
  /** Jobs with two or more runs whose fencing tokens were checked. */
  fencingChecked: number;
}

/** How long before a run's hand-off a fault still counts as hitting it (a cut noticed a little late). */
export const SLACK_MS = 250;

/** How much earlier than the producer's a dispatcher may see a broker outage. */
const OUTAGE_LEAD_MS = 1000;

/**
 * How long after a node fault ended (a killed node restarted and rejoined, a frozen one thawed)
 * its effects may still send a job back: a link noticed only by its heartbeat (2 s), a leader
 * election (~0.5 s). While the node is down or frozen, every run in flight may be hit: the links
 * to it drop, queues it led elect a new leader, and a queue declared without it (while it was
 * down) may have lost its majority.
 */
export const NODE_FAULT_REACH_MS = 3000;

/**
 * The faults that may have delivered a job's result event to the producer twice: its events queue
 * hands an event out again when the producer's ack of it was lost, i.e. when the producer's link
 * dropped (`broker_outage`) or a broker node failed between the result and the ack. Each such fault
 * starting from just before a completed run ended until {@link NODE_FAULT_REACH_MS} after, or still
 * active then, explains one extra result event.
 */
function eventRedeliveries(runs: readonly WorkerRun[], faults: readonly FaultRecord[]): FaultRecord[] {
  const ends = runs.filter((r) => r.end === "completed" && r.endedAt !== undefined).map((r) => r.endedAt!);
  return faults.filter((fault) => {
    if (fault.kind !== "broker_outage" && fault.kind !== "node_kill" && fault.kind !== "node_freeze") return false;
    return ends.some((end) => fault.at >= end - SLACK_MS && fault.at <= end + NODE_FAULT_REACH_MS) ||
      ends.some((end) => fault.at <= end && (fault.endedAt ?? fault.at) + NODE_FAULT_REACH_MS >= end);
  });
}

/** Parses worker log records (`S|C|A`, time, jobId, attempt[, code]) of one process into runs. */
export function parseWorkerRuns(pid: number, worker: string | undefined, lines: readonly string[][]): WorkerRun[] {
  const runs: WorkerRun[] = [];
  const open = new Map<string, WorkerRun[]>();
  for (const [tag, at, jobId, attempt, code] of lines) {
    if (jobId === undefined || attempt === undefined) continue;
    const key = `${jobId}\t${attempt}`;
    if (tag === "S") {
      const run: WorkerRun = { jobId, attempt: Number(attempt), pid, worker, startedAt: Number(at), end: "unknown", ...(code === undefined ? {} : { fencingToken: Number(code) }) };
      runs.push(run);
      const list = open.get(key);
      if (list) list.push(run);
      else open.set(key, [run]);
    } else if (tag === "C" || tag === "A") {
      const run = open.get(key)?.shift();
      if (!run) continue;
      run.end = tag === "C" ? "completed" : "aborted";
      run.endedAt = Number(at);
      if (tag === "A") run.abortCode = code;
    }
  }
  return runs;
}

/** Parses a dispatcher log's `start` lines. */
export function parseDispatches(dispatcher: string, incarnation: number, lines: readonly string[][]): DispatchRecord[] {
  const out: DispatchRecord[] = [];
  for (const [tag, at, jobId, attempt, workerId] of lines) {
    if (tag !== "start" || jobId === undefined || workerId === undefined) continue;
    out.push({ jobId, attempt: Number(attempt), workerId, dispatcher, incarnation, at: Number(at) });
  }
  return out;
}

interface Placed {
  run: WorkerRun;
  dispatch: DispatchRecord | undefined;
  handOff: number;
}

function hits(fault: FaultRecord, placed: Placed, from: number, to: number): boolean {
  const { run, dispatch } = placed;
  const end = fault.endedAt ?? fault.at;
  switch (fault.kind) {
    case "worker_kill":
      return fault.pid === run.pid && fault.at >= from && fault.at <= to;
    case "worker_freeze":
      return fault.pid === run.pid && fault.at <= to && end >= from;
    case "connection_cut":
      return (dispatch === undefined || dispatch.dispatcher === fault.target) && fault.at >= from && fault.at <= to;
    case "connection_blackhole":
      return (dispatch === undefined || dispatch.dispatcher === fault.target) && fault.at <= to && end >= from;
    case "dispatcher_kill":
      return (dispatch === undefined || (dispatch.dispatcher === fault.target && dispatch.incarnation === fault.incarnation)) && fault.at >= from && fault.at <= to;
    case "broker_outage":
      // The dispatchers' links (through their proxies) may drop a little before the producer's.
      return fault.at - OUTAGE_LEAD_MS <= to && end >= from;
    case "node_kill":
    case "node_freeze":
      return fault.at <= to && end + NODE_FAULT_REACH_MS >= from;
  }
}

/** When a run ended: its end line, else the first kill of its worker process after it started. */
function runEnd(run: WorkerRun, faults: readonly FaultRecord[]): number | undefined {
  return run.endedAt ?? faults.find((f) => f.kind === "worker_kill" && f.pid === run.pid && f.at >= run.startedAt)?.at;
}

/**
 * The windows in which two runs were inside their handlers at once, in ms: for each run, how long
 * it ran beside the latest-ending run started before it. A run with no end line ended when its
 * worker was killed (the first kill of its process after it started), else it is left out.
 */
export function overlapWindows(runs: readonly WorkerRun[], faults: readonly FaultRecord[]): number[] {
  const spans = runs.flatMap((run) => {
    const end = runEnd(run, faults);
    return end === undefined ? [] : [[run.startedAt, end] as const];
  });
  spans.sort((a, b) => a[0] - b[0]);
  const windows: number[] = [];
  let latestEnd = Number.NEGATIVE_INFINITY;
  for (const [start, end] of spans) {
    if (start < latestEnd) windows.push(Math.min(end, latestEnd) - start);
    latestEnd = Math.max(latestEnd, end);
  }
  return windows;
}

/**
 * The fencing tokens of a job's runs, given in the order they were handed out, when one handed
 * out later holds a smaller token than one before it (else undefined). Runs without a token are
 * left out.
 */
export function fencingViolation(runs: readonly WorkerRun[]): number[] | undefined {
  const tokens = runs.flatMap((run) => (run.fencingToken === undefined ? [] : [run.fencingToken]));
  for (let i = 1; i < tokens.length; i++) if (tokens[i]! < tokens[i - 1]!) return tokens;
  return undefined;
}

/** Something a dispatcher saw go wrong: its broker link dropped, or a worker left its pool. */
export interface Incident {
  /** `d<i>#<incarnation>`. */
  dispatcher: string;
  kind: "disconnected" | "worker_unhealthy";
  at: number;
  /** The worker (worker_unhealthy) and the reason given. */
  detail: string;
}

/**
 * Reads a dispatcher log's `amqp disconnected` and `worker … unhealthy` lines, and keeps those no
 * injected fault accounts for: a disconnect needs a cut, black hole or kill of that dispatcher, a
 * worker turning unhealthy a kill or freeze of that worker, from 100 ms before the fault until
 * `graceMs` after it ended (a freeze is noticed by a ping up to ~3 s after it began); a disconnect
 * is also accounted for by an observed `broker_outage`.
 * These are the faults nobody injected: a heartbeat that timed out on a busy machine, a health
 * check that failed on its own. The duplicates they cause are not counted as explained.
 */
export function incidentsWithoutFault(dispatcher: string, incarnation: number, lines: readonly string[][], faults: readonly FaultRecord[], graceMs: number): Incident[] {
  const out: Incident[] = [];
  const covered = (t: number, match: (f: FaultRecord) => boolean, lead = 100) => faults.some((f) => match(f) && t >= f.at - lead && t <= (f.endedAt ?? f.at) + graceMs);
  for (const [tag, at, a, b, to, reason] of lines) {
    const t = Number(at);
    if (tag === "amqp" && a === "disconnected") {
      const link = (f: FaultRecord) => f.target === dispatcher && (f.kind === "connection_cut" || f.kind === "connection_blackhole" || f.kind === "dispatcher_kill");
      const node = (f: FaultRecord) => f.kind === "node_kill" || f.kind === "node_freeze";
      if (!covered(t, link) && !covered(t, (f) => f.kind === "broker_outage", OUTAGE_LEAD_MS) && !covered(t, node)) {
        out.push({ dispatcher: `${dispatcher}#${incarnation}`, kind: "disconnected", at: t, detail: b ?? "" });
      }
    } else if (tag === "worker" && to === "unhealthy" && a !== undefined) {
      if (!covered(t, (f) => f.target === a && (f.kind === "worker_kill" || f.kind === "worker_freeze"))) {
        out.push({ dispatcher: `${dispatcher}#${incarnation}`, kind: "worker_unhealthy", at: t, detail: `${a}: ${reason ?? ""}` });
      }
    }
  }
  return out;
}

/** One line describing a fault. */
export function describeFault(fault: FaultRecord, t0: number): string {
  const s = (t: number) => `${((t - t0) / 1000).toFixed(2)} s`;
  const pid = fault.pid === undefined ? "" : ` (pid ${fault.pid})`;
  const until = fault.endedAt === undefined ? "" : ` until ${s(fault.endedAt)}`;
  return `#${fault.id} ${fault.kind} ${fault.target}${pid} at ${s(fault.at)}${until}`;
}

/**
 * Finds every job that ran more than once and explains it by the faults (see the module comment).
 * `uncertainSubmits`: jobs whose submit was sent again after an unknown outcome.
 */
export function analyse(input: {
  runs: readonly WorkerRun[];
  dispatches: readonly DispatchRecord[];
  faults: readonly FaultRecord[];
  producer: readonly ProducerView[];
  uncertainSubmits?: readonly string[];
  t0: number;
}): Analysis {
  const { faults, t0 } = input;
  const uncertain = new Set(input.uncertainSubmits ?? []);
  // Dispatch records by job, attempt and worker; each matches at most one run.
  const byKey = new Map<string, DispatchRecord[]>();
  for (const d of input.dispatches) {
    const key = `${d.jobId}\t${d.attempt}\t${d.workerId}`;
    const list = byKey.get(key);
    if (list) list.push(d);
    else byKey.set(key, [d]);
  }
  const runsByJob = new Map<string, Placed[]>();
  let unmatchedRuns = 0;
  const sortedRuns = [...input.runs].sort((a, b) => a.startedAt - b.startedAt);
  for (const run of sortedRuns) {
    const candidates = run.worker === undefined ? undefined : byKey.get(`${run.jobId}\t${run.attempt}\t${run.worker}`);
    // The latest hand-off no later than the start (same clock; 50 ms of leeway for timer rounding).
    let dispatch: DispatchRecord | undefined;
    let index = -1;
    candidates?.forEach((d, i) => {
      if (d.at <= run.startedAt + 50 && (dispatch === undefined || d.at > dispatch.at)) {
        dispatch = d;
        index = i;
      }
    });
    if (dispatch === undefined) unmatchedRuns++;
    else candidates!.splice(index, 1);
    const placed: Placed = { run, dispatch, handOff: dispatch?.at ?? run.startedAt };
    const list = runsByJob.get(run.jobId);
    if (list) list.push(placed);
    else runsByJob.set(run.jobId, [placed]);
  }

  const producerById = new Map(input.producer.map((p) => [p.jobId, p]));
  const windows: Array<{ jobId: string; ms: number }> = [];
  const fencingViolations: Array<{ jobId: string; tokens: number[] }> = [];
  const fencingResubmitted: Array<{ jobId: string; tokens: number[] }> = [];
  const fencingStale: Array<{ jobId: string; tokens: number[] }> = [];
  let fencingChecked = 0;
  const ranMoreThanOnce: DuplicateReport[] = [];
  const unexplained: DuplicateReport[] = [];
  let duplicateCompletions = 0;
  const resultsWithoutRun: string[] = [];
  const sec = (t: number) => Math.round(t - t0) / 1000;

  for (const p of input.producer) {
    duplicateCompletions += Math.max(0, p.resultEvents - 1);
    if (p.status !== "completed" || p.resultPid === null) continue;
    const runs = runsByJob.get(p.jobId) ?? [];
    if (!runs.some(({ run }) => run.pid === p.resultPid && run.attempt === p.resultAttempt && run.end === "completed")) resultsWithoutRun.push(p.jobId);
  }

  for (const [jobId, runs] of runsByJob) {
    const view = producerById.get(jobId);
    const resultEvents = view?.resultEvents ?? 0;
    const completedRuns = runs.filter(({ run }) => run.end === "completed").length;
    if (runs.length < 2 && resultEvents <= Math.max(1, completedRuns)) continue;
    runs.sort((a, b) => a.handOff - b.handOff || a.run.startedAt - b.run.startedAt);
    const hitBy: number[][] = runs.map(() => []);
    for (let i = 0; i < runs.length - 1; i++) {
      const from = runs[i]!.handOff - SLACK_MS;
      const to = runs[i + 1]!.handOff;
      for (const fault of faults) if (hits(fault, runs[i]!, from, to)) hitBy[i]!.push(fault.id);
    }
    // A stale last run: its dispatcher's link was cut, the broker gave the job to another
    // dispatcher at once, and the cut dispatcher, not knowing yet, handed its now-lost delivery to
    // a worker a moment later (seen: 11 ms after the other's hand-off, 4 ms before its socket
    // reported the reset). The last run in hand-off order is then the stale one, not the result.
    const last = runs.length - 1;
    const previous = runs[last - 1];
    const lastRun = runs[last]!;
    const isResult = view !== undefined && lastRun.run.pid === view.resultPid && lastRun.run.attempt === view.resultAttempt && lastRun.run.end === "completed";
    let staleLast = false;
    if (previous !== undefined && !isResult && lastRun.dispatch !== undefined) {
      for (const fault of faults) {
        const linkFault = fault.kind === "connection_cut" || fault.kind === "connection_blackhole";
        if (linkFault && fault.target === lastRun.dispatch.dispatcher && fault.at >= lastRun.handOff - SLACK_MS && fault.at <= previous.handOff) {
          hitBy[last]!.push(fault.id);
          staleLast = true;
        }
      }
    }
    const hitIds = [...new Set(hitBy.flat())];
    // One fault takes a job back to the queue once: it counts once however many runs it hit.
    const hitCount = hitIds.length + (uncertain.has(jobId) ? 1 : 0);
    const extra = runs.length - 1;
    const report: DuplicateReport = {
      jobId,
      attempts: runs.map(({ run, dispatch, handOff }, i) => ({
        attempt: run.attempt,
        worker: run.worker ?? null,
        pid: run.pid,
        dispatcher: dispatch ? `${dispatch.dispatcher}#${dispatch.incarnation}` : null,
        dispatched_s: sec(handOff),
        started_s: sec(run.startedAt),
        ended_s: run.endedAt === undefined ? null : sec(run.endedAt),
        ended: run.end === "aborted" ? `aborted (${run.abortCode})` : run.end,
        hit_by: hitBy[i]!,
      })),
      explained_by: [
        ...hitIds.map((id) => describeFault(faults.find((f) => f.id === id)!, t0)),
        ...(uncertain.has(jobId) ? ["submit sent again after an unknown outcome"] : []),
      ],
      extra_runs: extra,
      hits: hitCount,
      result_events: resultEvents,
      overlapping: false,
    };
    const jobWindows = overlapWindows(runs.map((p) => p.run), faults);
    report.overlapping = jobWindows.length > 0;
    for (const ms of jobWindows) windows.push({ jobId, ms });
    if (runs.length > 1) {
      fencingChecked++;
      const violation = fencingViolation(runs.map((p) => p.run));
      const staleCleared = staleLast && fencingViolation(runs.slice(0, -1).map((p) => p.run)) === undefined;
      if (violation) (uncertain.has(jobId) ? fencingResubmitted : staleCleared ? fencingStale : fencingViolations).push({ jobId, tokens: violation });
    }
    if (runs.length > 1) ranMoreThanOnce.push(report);
    if (hitCount < extra) {
      unexplained.push({ ...report, reason: `${extra} extra run(s) but ${hitCount} fault hit(s)` });
    } else if (resultEvents > Math.max(1, completedRuns)) {
      const redelivered = eventRedeliveries(runs.map((p) => p.run), faults);
      if (redelivered.length >= resultEvents - Math.max(1, completedRuns)) {
        report.explained_by.push(...redelivered.map((f) => `result event delivered again after ${describeFault(f, t0)}`));
      } else {
        unexplained.push({ ...report, reason: `${resultEvents} result events but ${completedRuns} completed run(s)` });
      }
    }
  }
  const runsHitByFault = new Map<number, number>();
  for (const runs of runsByJob.values()) {
    for (const placed of runs) {
      const to = runEnd(placed.run, faults) ?? Number.POSITIVE_INFINITY;
      for (const fault of faults) if (hits(fault, placed, placed.handOff, to)) runsHitByFault.set(fault.id, (runsHitByFault.get(fault.id) ?? 0) + 1);
    }
  }
  return {
    runsHitByFault,
    runs: input.runs.length,
    jobsRun: runsByJob.size,
    ranMoreThanOnce,
    unexplained,
    duplicateCompletions,
    resultsWithoutRun,
    unmatchedRuns,
    overlapWindows: windows,
    fencingViolations,
    fencingResubmitted,
    fencingStale,
    fencingChecked,
  };
}
