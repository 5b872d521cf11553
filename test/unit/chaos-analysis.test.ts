import { describe, expect, it } from "vitest";
import { analyse, fencingViolation, incidentsWithoutFault, overlapWindows, parseDispatches, parseWorkerRuns, type DispatchRecord, type FaultRecord, type ProducerView, type WorkerRun } from "../../bench/chaos/analysis.ts";
import { FAULT_KINDS, planFaults } from "../../bench/chaos/plan.ts";

const T0 = 1_000_000;
const W0 = 100;
const W1 = 101;

function run(jobId: string, attempt: number, pid: number, startedAt: number, end: WorkerRun["end"] = "completed", endedAt?: number): WorkerRun {
  return { jobId, attempt, pid, worker: pid === W0 ? "w0" : "w1", startedAt: T0 + startedAt, end, endedAt: endedAt === undefined ? undefined : T0 + endedAt };
}

function dispatch(jobId: string, attempt: number, workerId: string, at: number, dispatcher = "d0", incarnation = 1): DispatchRecord {
  return { jobId, attempt, workerId, dispatcher, incarnation, at: T0 + at };
}

function fault(id: number, kind: FaultRecord["kind"], target: string, at: number, extra: Partial<FaultRecord> = {}): FaultRecord {
  return { id, kind, target, at: T0 + at, ...extra, ...(extra.endedAt === undefined ? {} : { endedAt: T0 + extra.endedAt }) };
}

function completed(jobId: string, pid: number, attempt: number, resultEvents = 1): ProducerView {
  return { jobId, status: "completed", resultPid: pid, resultAttempt: attempt, resultEvents };
}

describe("chaos analysis", () => {
  it("measures overlap windows: the time a run spent in its handler beside an earlier run of the job", () => {
    // Second run starts 40 ms before the first ends; a third starts after both ended.
    expect(overlapWindows([run("j", 1, W0, 0, "aborted", 100), run("j", 2, W1, 60, "completed", 160), run("j", 3, W0, 200, "completed", 250)], [])).toEqual([40]);
    // A run without an end line ends at the kill of its worker.
    expect(overlapWindows([run("j", 1, W0, 0, "unknown"), run("j", 2, W1, 10, "completed", 30)], [fault(1, "worker_kill", "w0", 25, { pid: W0 })])).toEqual([15]);
    expect(overlapWindows([run("j", 1, W0, 0, "aborted", 10), run("j", 2, W1, 20)], [])).toEqual([]);
  });

  it("finds a run handed out later holding a smaller fencing token than an earlier one", () => {
    const tokened = (token: number, startedAt: number): WorkerRun => ({ ...run("j", token, W0, startedAt), fencingToken: token });
    expect(fencingViolation([tokened(1, 0), tokened(2, 10), tokened(2, 20)])).toBeUndefined();
    expect(fencingViolation([tokened(2, 0), tokened(1, 10)])).toEqual([2, 1]);
    expect(parseWorkerRuns(W0, "w0", [["S", "5", "j", "2", "7"]])[0]).toMatchObject({ attempt: 2, fencingToken: 7 });
  });

  it("counts a node kill as hitting every run in flight until the node is back, and no later", () => {
    const a = analyse({
      runs: [run("j", 1, W0, 10, "aborted", 40), run("j", 2, W1, 60), run("k", 1, W0, 5000, "aborted", 5100), run("k", 2, W1, 5200)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("j", 2, "w1", 59), dispatch("k", 1, "w0", 4999), dispatch("k", 2, "w1", 5199)],
      faults: [fault(1, "node_kill", "n0", 30, { endedAt: 1000 })],
      producer: [completed("j", W1, 2), completed("k", W1, 2)],
      t0: T0,
    });
    expect(a.unexplained.map((u) => u.jobId)).toEqual(["k"]);
  });

  it("explains a job run twice by the SIGKILL of the worker its first run was on", () => {
    const a = analyse({
      runs: [run("j", 1, W0, 10, "unknown"), run("j", 2, W1, 60)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("j", 2, "w1", 59)],
      faults: [fault(1, "worker_kill", "w0", 30, { pid: W0 })],
      producer: [completed("j", W1, 2)],
      t0: T0,
    });
    expect(a.ranMoreThanOnce).toHaveLength(1);
    expect(a.ranMoreThanOnce[0]!.explained_by).toEqual(["#1 worker_kill w0 (pid 100) at 0.03 s"]);
    expect(a.ranMoreThanOnce[0]!.attempts.map((r) => r.hit_by)).toEqual([[1], []]);
    expect(a.unexplained).toEqual([]);
  });

  it("reports a job run twice with no fault, or with faults on other targets, as unexplained", () => {
    const a = analyse({
      runs: [run("j", 1, W0, 10, "completed", 20), run("j", 2, W1, 60, "completed", 70)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("j", 2, "w1", 59, "d1")],
      // w1 killed (not the first run's worker), d1 cut (not its dispatcher), d0 cut after the second run began.
      faults: [fault(1, "worker_kill", "w1", 30, { pid: W1 }), fault(2, "connection_cut", "d1", 30), fault(3, "connection_cut", "d0", 65)],
      producer: [completed("j", W0, 1, 2)],
      t0: T0,
    });
    expect(a.unexplained.map((u) => [u.jobId, u.reason])).toEqual([["j", "1 extra run(s) but 0 fault hit(s)"]]);
    expect(a.duplicateCompletions).toBe(1);
  });

  it("explains a stale run handed out by a dispatcher whose link was cut after the job went elsewhere", () => {
    // d1's link is cut at 10; the broker hands the job to d0 (20), and d1, not knowing yet, hands
    // its lost delivery to a worker at 31, where it is aborted.
    const stale = analyse({
      runs: [run("j", 2, W0, 21, "completed", 90), run("j", 1, W0, 32, "aborted", 33)],
      dispatches: [dispatch("j", 2, "w0", 20), dispatch("j", 1, "w0", 31, "d1")],
      faults: [fault(1, "connection_cut", "d1", 10)],
      producer: [completed("j", W0, 2)],
      t0: T0,
    });
    expect(stale.unexplained).toEqual([]);
    expect(stale.ranMoreThanOnce[0]!.attempts.map((r) => r.hit_by)).toEqual([[], [1]]);
    // Its smaller token is the stale attempt's (what a fenced write refuses), not a violation.
    const tokened = analyse({
      runs: [{ ...run("j", 2, W0, 21, "completed", 90), fencingToken: 2 }, { ...run("j", 1, W0, 32, "aborted", 33), fencingToken: 1 }],
      dispatches: [dispatch("j", 2, "w0", 20), dispatch("j", 1, "w0", 31, "d1")],
      faults: [fault(1, "connection_cut", "d1", 10)],
      producer: [completed("j", W0, 2)],
      t0: T0,
    });
    expect(tokened.fencingViolations).toEqual([]);
    expect(tokened.fencingStale).toEqual([{ jobId: "j", tokens: [2, 1] }]);
    // The same cut after the other hand-off explains nothing: the broker did not move the job for it.
    const late = analyse({
      runs: [run("j", 2, W0, 21, "completed", 90), run("j", 1, W0, 32, "aborted", 33)],
      dispatches: [dispatch("j", 2, "w0", 20), dispatch("j", 1, "w0", 31, "d1")],
      faults: [fault(1, "connection_cut", "d1", 25)],
      producer: [completed("j", W0, 2)],
      t0: T0,
    });
    expect(late.unexplained.map((u) => u.jobId)).toEqual(["j"]);
  });

  it("needs a fault hit per extra run: three runs after one kill are unexplained, after a kill and a cut explained", () => {
    const runs = [run("j", 1, W0, 10, "unknown"), run("j", 2, W1, 60), run("j", 2, W1, 80)];
    const dispatches = [dispatch("j", 1, "w0", 9), dispatch("j", 2, "w1", 59), dispatch("j", 2, "w1", 79, "d1")];
    const kill = fault(1, "worker_kill", "w0", 30, { pid: W0 });
    const one = analyse({ runs, dispatches, faults: [kill], producer: [completed("j", W1, 2, 2)], t0: T0 });
    expect(one.unexplained.map((u) => u.reason)).toEqual(["2 extra run(s) but 1 fault hit(s)"]);
    // The cut lost the ack of the retry: the job went back to the queue beside its retry copy.
    const two = analyse({ runs, dispatches, faults: [kill, fault(2, "connection_cut", "d0", 40)], producer: [completed("j", W1, 2, 2)], t0: T0 });
    expect(two.unexplained).toEqual([]);
    expect(two.ranMoreThanOnce[0]!.hits).toBe(2);
  });

  it("orders runs by their hand-off, so a run handed to a frozen worker that started only after the thaw is explained by the freeze", () => {
    const a = analyse({
      // Handed to w0 at 1.2 s while frozen (1.0–4.0 s); the worker read it after the thaw, then aborted it.
      runs: [run("j", 2, W1, 3_500), run("j", 1, W0, 4_050, "aborted", 4_051)],
      dispatches: [dispatch("j", 1, "w0", 1_200), dispatch("j", 2, "w1", 3_499)],
      faults: [fault(1, "worker_freeze", "w0", 1_000, { pid: W0, endedAt: 4_000 })],
      producer: [completed("j", W1, 2)],
      t0: T0,
    });
    expect(a.ranMoreThanOnce[0]!.attempts.map((r) => r.attempt)).toEqual([1, 2]);
    expect(a.unexplained).toEqual([]);
  });

  it("counts a dispatcher kill only against runs of the incarnation it killed, and a black hole by overlap", () => {
    const runs = [run("j", 1, W0, 10, "completed", 20), run("j", 2, W1, 3_000)];
    const dispatches = [dispatch("j", 1, "w0", 9, "d0", 2), dispatch("j", 2, "w1", 2_999, "d1")];
    const producer = [completed("j", W1, 2)];
    const otherIncarnation = analyse({ runs, dispatches, faults: [fault(1, "dispatcher_kill", "d0", 500, { incarnation: 1 })], producer, t0: T0 });
    expect(otherIncarnation.unexplained).toHaveLength(1);
    const killed = analyse({ runs, dispatches, faults: [fault(1, "dispatcher_kill", "d0", 500, { incarnation: 2 })], producer, t0: T0 });
    expect(killed.unexplained).toEqual([]);
    // A black hole from before the first run's hand-off to after it.
    const blackhole = analyse({ runs, dispatches, faults: [fault(1, "connection_blackhole", "d0", 0, { endedAt: 4_000 })], producer, t0: T0 });
    expect(blackhole.unexplained).toEqual([]);
  });

  it("explains duplicates on any dispatcher by an observed broker outage (the producer's own link dropped)", () => {
    const input = {
      runs: [run("j", 1, W0, 10, "completed", 20), run("j", 2, W1, 3_000), run("k", 1, W1, 10, "completed", 20), run("k", 2, W0, 3_000)],
      dispatches: [dispatch("j", 1, "w0", 9, "d0"), dispatch("j", 2, "w1", 2_999, "d1"), dispatch("k", 1, "w1", 9, "d1"), dispatch("k", 2, "w0", 2_999, "d0")],
      producer: [completed("j", W1, 2), completed("k", W0, 2)],
      t0: T0,
    };
    expect(analyse({ ...input, faults: [] }).unexplained).toHaveLength(2);
    // The dispatchers' links dropped at 25 ms; the producer saw it at 500 ms, back at 2.5 s.
    const outage = fault(1001, "broker_outage", "broker", 500, { endedAt: 2_500 });
    expect(analyse({ ...input, faults: [outage] }).unexplained).toEqual([]);
    const lines = [["amqp", String(T0 + 25), "disconnected", "read ECONNRESET"]];
    expect(incidentsWithoutFault("d0", 1, lines, [], 3_000)).toHaveLength(1);
    expect(incidentsWithoutFault("d0", 1, lines, [outage], 3_000)).toEqual([]);
  });

  it("flags more result events than completed runs, and a result that names no completed run", () => {
    const a = analyse({
      runs: [run("j", 1, W0, 10, "completed", 20), run("k", 1, W0, 10, "aborted", 15)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("k", 1, "w0", 9)],
      faults: [],
      producer: [completed("j", W0, 1, 2), completed("k", W0, 1)],
      t0: T0,
    });
    expect(a.unexplained.map((u) => [u.jobId, u.reason])).toEqual([["j", "2 result events but 1 completed run(s)"]]);
    expect(a.ranMoreThanOnce).toEqual([]);
    expect(a.resultsWithoutRun).toEqual(["k"]);
  });

  it("explains a result event delivered twice by the producer's link dropping just after the run, and no other", () => {
    // Seen: the run ended 9 ms before the node under the producer was killed; its events queue
    // handed the result out again after the reconnect, the first ack lost with the link.
    const input = (faults: FaultRecord[]) =>
      analyse({
        runs: [run("j", 1, W0, 10, "completed", 100)],
        dispatches: [dispatch("j", 1, "w0", 9)],
        faults,
        producer: [completed("j", W0, 1, 2)],
        t0: T0,
      });
    expect(input([fault(1, "broker_outage", "broker", 109, { endedAt: 150 })]).unexplained).toEqual([]);
    expect(input([fault(1, "node_kill", "n0", 109, { endedAt: 9000 })]).unexplained).toEqual([]);
    // A worker's kill, or an outage long after the result, explains nothing.
    expect(input([fault(1, "worker_kill", "w1", 109, { pid: W1 })]).unexplained.map((u) => u.reason)).toEqual(["2 result events but 1 completed run(s)"]);
    expect(input([fault(1, "broker_outage", "broker", 60_000, { endedAt: 60_100 })]).unexplained).toHaveLength(1);
  });

  it("counts an extra run as explained when the producer had to submit the job again after an unknown outcome", () => {
    const input = {
      runs: [run("j", 1, W0, 10, "completed", 20), run("j", 1, W1, 30, "completed", 40)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("j", 1, "w1", 29)],
      faults: [],
      producer: [completed("j", W0, 1, 2)],
      t0: T0,
    };
    expect(analyse(input).unexplained).toHaveLength(1);
    expect(analyse({ ...input, uncertainSubmits: ["j"] }).unexplained).toEqual([]);
  });

  it("reports a token that went down on a job the producer submitted twice apart from fencing violations", () => {
    // The second message of a resubmitted job is a new submission: its attempts count from 1.
    const input = {
      runs: [{ ...run("j", 2, W0, 10, "completed", 20), fencingToken: 2 }, { ...run("j", 1, W1, 30, "completed", 40), fencingToken: 1 }],
      dispatches: [dispatch("j", 2, "w0", 9), dispatch("j", 1, "w1", 29)],
      faults: [],
      producer: [completed("j", W0, 2, 2)],
      t0: T0,
    };
    expect(analyse(input).fencingViolations).toEqual([{ jobId: "j", tokens: [2, 1] }]);
    const resubmitted = analyse({ ...input, uncertainSubmits: ["j"] });
    expect(resubmitted.fencingViolations).toEqual([]);
    expect(resubmitted.fencingResubmitted).toEqual([{ jobId: "j", tokens: [2, 1] }]);
  });

  it("counts the runs in flight on each fault's target, a run cut short by its worker's kill ending there", () => {
    const a = analyse({
      // j: on w0 via d0 from 10 ms, its worker killed at 30 ms (no end line); k: on w1 via d0, 40-90 ms.
      runs: [run("j", 1, W0, 10, "unknown"), run("k", 1, W1, 40, "completed", 90)],
      dispatches: [dispatch("j", 1, "w0", 9), dispatch("k", 1, "w1", 39)],
      faults: [fault(1, "worker_kill", "w0", 30, { pid: W0 }), fault(2, "connection_cut", "d0", 50), fault(3, "connection_cut", "d1", 50)],
      producer: [],
      t0: T0,
    });
    expect([...a.runsHitByFault]).toEqual([
      [1, 1],
      [2, 1],
    ]);
  });

  it("reads runs from worker log lines and matches each to the dispatcher's hand-off", () => {
    const runs = parseWorkerRuns(W0, "w0", [
      ["S", String(T0 + 10), "j", "1"],
      ["S", String(T0 + 11), "k", "1"],
      ["A", String(T0 + 12), "k", "1", "worker_lost"],
      ["C", String(T0 + 20), "j", "1"],
      ["S", String(T0 + 30), "m", "1"],
    ]);
    expect(runs.map((r) => [r.jobId, r.end, r.abortCode])).toEqual([
      ["j", "completed", undefined],
      ["k", "aborted", "worker_lost"],
      ["m", "unknown", undefined],
    ]);
    const dispatches = parseDispatches("d0", 1, [
      ["start", String(T0 + 9), "j", "1", "w0"],
      ["complete", String(T0 + 21), "j", "1", "w0"],
    ]);
    expect(dispatches).toEqual([dispatch("j", 1, "w0", 9)]);
    const a = analyse({ runs, dispatches, faults: [], producer: [], t0: T0 });
    expect(a.unmatchedRuns).toBe(2);
  });
});

describe("chaos incidents", () => {
  it("keeps the link drops and worker evictions that no injected fault on that target accounts for", () => {
    const faults = [fault(1, "connection_blackhole", "d0", 1_000, { endedAt: 5_000 }), fault(2, "worker_freeze", "w1", 2_000, { pid: W1, endedAt: 5_000 })];
    const line = (t: number, ...rest: string[]) => [rest[0]!, String(T0 + t), ...rest.slice(1)];
    const lines = [
      line(3_000, "amqp", "disconnected", "Heartbeat timeout"), // the black hole
      line(4_100, "worker", "w1", "busy", "unhealthy", "connection lost"), // the freeze
      line(6_000, "worker", "w1", "unhealthy", "idle"), // recovered: not an incident
      line(20_000, "amqp", "disconnected", "Heartbeat timeout"), // nothing injected then
      line(21_000, "worker", "w0", "idle", "unhealthy", "check timed out"), // w0 was never struck
    ];
    const incidents = incidentsWithoutFault("d0", 1, lines, faults, 3_000);
    expect(incidents.map((i) => [i.kind, i.at - T0, i.detail])).toEqual([
      ["disconnected", 20_000, "Heartbeat timeout"],
      ["worker_unhealthy", 21_000, "w0: check timed out"],
    ]);
    // The same black hole on the other dispatcher explains nothing here.
    expect(incidentsWithoutFault("d1", 1, [line(3_000, "amqp", "disconnected", "x")], faults, 3_000)).toHaveLength(1);
  });
});

describe("chaos fault plan", () => {
  it("holds every kind of fault, a cut and a black hole per dispatcher, and is the same for the same seed", () => {
    const options = { seed: 7, submitMs: 20_000, workers: 4, dispatchers: 2 };
    const plan = planFaults(options);
    expect(planFaults(options)).toEqual(plan);
    expect(planFaults({ ...options, seed: 8 })).not.toEqual(plan);
    for (const kind of FAULT_KINDS) expect(plan.some((f) => f.kind === kind), kind).toBe(true);
    for (const kind of ["connection_cut", "connection_blackhole"] as const) {
      expect(plan.filter((f) => f.kind === kind).map((f) => f.target).sort()).toEqual([0, 1]);
    }
    expect(plan.filter((f) => f.kind === "dispatcher_kill")).toHaveLength(1);
    // The required set first, the dispatcher kill last of it, so no required fault waits behind
    // a dispatcher's restart.
    const required = 4 + 2 * options.dispatchers; // two worker kills, a freeze, the kill; a cut and a black hole each
    expect(plan.findIndex((f) => f.kind === "dispatcher_kill")).toBe(required - 1);
    for (const f of plan) {
      expect(f.atMs).toBeGreaterThanOrEqual(1000);
      expect(f.atMs).toBeLessThanOrEqual(12_000);
    }
  });

  it("adds about one fault per 2.5 s of submitting beyond the required set", () => {
    const plan = planFaults({ seed: 1, submitMs: 40_000, workers: 4, dispatchers: 2 });
    expect(plan).toHaveLength(16);
    expect(plan.filter((f) => f.kind === "dispatcher_kill")).toHaveLength(1);
    expect(Math.max(...plan.map((f) => f.atMs))).toBeLessThanOrEqual(24_000);
  });
});
