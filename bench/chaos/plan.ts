/**
 * The fault plan of a chaos run, drawn from a seeded generator: which faults, on what, when, and
 * how long each lasts. The same seed, job count and rate give the same plan.
 */
import { Random } from "./random.ts";

/** What a fault does. `node_*`: to a node of the private RabbitMQ cluster (`--cluster`). */
export type FaultKind = "worker_kill" | "worker_freeze" | "connection_cut" | "connection_blackhole" | "dispatcher_kill" | "node_kill" | "node_freeze";

/** Every kind of fault on one broker; a plan holds each at least once. */
export const FAULT_KINDS: readonly FaultKind[] = ["worker_kill", "worker_freeze", "connection_cut", "connection_blackhole", "dispatcher_kill"];

/** The kinds a cluster run adds: kill -9 of a node (the job queue's leader first), SIGSTOP of a node. */
export const NODE_FAULT_KINDS: readonly FaultKind[] = ["node_kill", "node_freeze"];

/** Which faults a plan holds: all of them, or only the broker nodes' (a cluster run). */
export type FaultSet = "all" | "nodes";

/** The kinds a plan of `set` holds, on a cluster or not. */
export function faultKinds(options: { cluster: boolean; set: FaultSet }): FaultKind[] {
  if (options.set === "nodes") return [...NODE_FAULT_KINDS];
  return options.cluster ? [...FAULT_KINDS, ...NODE_FAULT_KINDS] : [...FAULT_KINDS];
}

/** One planned fault. */
export interface PlannedFault {
  kind: FaultKind;
  /** When it is due, in ms from the start of submitting. */
  atMs: number;
  /** Worker index for worker faults, node index for node faults (-1: the job queue's leader), dispatcher index for the others. */
  target: number;
  /**
   * worker_freeze, node_freeze: SIGSTOP → SIGCONT; connection_blackhole: black hole → restore;
   * worker_kill, dispatcher_kill, node_kill: SIGKILL → the restart begins; connection_cut: 0.
   */
  durationMs: number;
}

/** Sizes a plan depends on. */
export interface PlanOptions {
  seed: number;
  /** How long jobs are submitted for, in ms: faults are spread over it. */
  submitMs: number;
  workers: number;
  dispatchers: number;
  /** Average gap between two faults. @default 2500 */
  meanGapMs?: number;
  /** Nodes of the private RabbitMQ cluster; 0 (default): the machine's one broker, no node faults. */
  nodes?: number;
  /** Only the node faults (`nodes`), or everything (`all`). @default "all" */
  set?: FaultSet;
}

/** Mixture of the faults added beyond the required set. */
const EXTRA_WEIGHTS: ReadonlyArray<[FaultKind, number]> = [
  ["worker_kill", 0.4],
  ["worker_freeze", 0.2],
  ["connection_cut", 0.25],
  ["connection_blackhole", 0.15],
];

function duration(kind: FaultKind, random: Random): number {
  switch (kind) {
    case "worker_freeze":
      return random.int(2500, 5000); // past the 2 s ping timeout: the worker is failed over
    case "connection_blackhole":
      return random.int(3000, 4500); // past the 2 s heartbeat timeout: both sides notice on their own
    case "worker_kill":
      return random.int(300, 1500);
    case "dispatcher_kill":
      return random.int(1500, 3000);
    case "connection_cut":
      return 0;
    case "node_kill":
      return random.int(2000, 4000); // then a restart of ~10-30 s, during which the others carry on
    case "node_freeze":
      return random.int(4000, 8000); // past the 2 s heartbeat timeout and a leader election
  }
}

/**
 * Draws a plan: two worker kills, a freeze, a cut and a black hole of each dispatcher's
 * connection, one dispatcher kill (last of these), plus faults drawn from a mixture up to one
 * per `meanGapMs` after them; each part shuffled, and spread evenly (with jitter) over 5 %–60 % of the submit time, so that each one
 * (and its recovery, and the wait of a dispatcher fault for the previous one to end) happens while
 * jobs flow.
 */
export function planFaults(options: PlanOptions): PlannedFault[] {
  const random = new Random(options.seed);
  const meanGapMs = options.meanGapMs ?? 2500;
  const nodes = options.nodes ?? 0;
  const set = options.set ?? "all";
  if (set === "nodes") {
    // A node frozen and thawed, then the job queue's leader killed and restarted, in that order,
    // early enough that jobs still flow after the restart (which takes 10-30 s) on a run of a minute.
    return [
      { kind: "node_freeze", atMs: Math.round(options.submitMs * 0.05), target: random.int(0, nodes - 1), durationMs: duration("node_freeze", random) },
      { kind: "node_kill", atMs: Math.round(options.submitMs * 0.25), target: -1, durationMs: duration("node_kill", random) },
    ];
  }
  const kinds: Array<{ kind: FaultKind; target?: number }> = [];
  if (set === "all") {
    kinds.push({ kind: "worker_kill" }, { kind: "worker_kill" }, { kind: "worker_freeze" }, { kind: "dispatcher_kill" });
    for (let d = 0; d < options.dispatchers; d++) kinds.push({ kind: "connection_cut", target: d }, { kind: "connection_blackhole", target: d });
  }
  // On a cluster: the job queue's leader killed (and restarted), a node frozen, one node fault at
  // a time. One kill per run: a queue declared while a node is down gets only the nodes then up
  // as members (RabbitMQ 3.10 does not grow it by itself), so killing another node later could
  // take its majority (see docs/rabbitmq.md).
  if (nodes > 0) kinds.push({ kind: "node_kill", target: -1 }, { kind: "node_freeze" });
  const total = Math.max(kinds.length, Math.floor(options.submitMs / meanGapMs));
  // The required set comes first, with the dispatcher kill last of it: a dispatcher fault waits
  // for the previous one on its dispatcher to end, and a killed dispatcher's restart can take
  // longer than the rest of a short run under load, which used to push a required cut or black
  // hole past the run's end (skipped). The extras follow in their own shuffled order.
  random.shuffle(kinds);
  const killAt = kinds.findIndex((k) => k.kind === "dispatcher_kill");
  if (killAt >= 0) kinds.push(...kinds.splice(killAt, 1));
  const extras: Array<{ kind: FaultKind; target?: number }> = [];
  while (kinds.length + extras.length < total) {
    let r = random.next();
    const extra = EXTRA_WEIGHTS.find(([, w]) => (r -= w) < 0)?.[0] ?? "worker_kill";
    extras.push({ kind: extra });
  }
  random.shuffle(extras);
  kinds.push(...extras);
  const span = options.submitMs * 0.55;
  return kinds.map(({ kind, target }, i) => ({
    kind,
    atMs: Math.round(options.submitMs * 0.05 + (span * (i + random.next() * 0.8)) / kinds.length),
    target: target ?? random.int(0, (kind.startsWith("worker") ? options.workers : kind.startsWith("node") ? nodes : options.dispatchers) - 1),
    durationMs: duration(kind, random),
  }));
}
