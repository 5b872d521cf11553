/**
 * The fault plan of a chaos run, drawn from a seeded generator: which faults, on what, when, and
 * how long each lasts. The same seed, job count and rate give the same plan.
 */
import { Random } from "./random.ts";

/** What a fault does. */
export type FaultKind = "worker_kill" | "worker_freeze" | "connection_cut" | "connection_blackhole" | "dispatcher_kill";

/** Every kind of fault; a plan holds each at least once. */
export const FAULT_KINDS: readonly FaultKind[] = ["worker_kill", "worker_freeze", "connection_cut", "connection_blackhole", "dispatcher_kill"];

/** One planned fault. */
export interface PlannedFault {
  kind: FaultKind;
  /** When it is due, in ms from the start of submitting. */
  atMs: number;
  /** Worker index for worker faults, dispatcher index for the others. */
  target: number;
  /**
   * worker_freeze: SIGSTOP → SIGCONT; connection_blackhole: black hole → restore; worker_kill and
   * dispatcher_kill: SIGKILL → the restarted process is started; connection_cut: 0.
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
  }
}

/**
 * Draws a plan: two worker kills, a freeze, a cut and a black hole of each dispatcher's
 * connection, one dispatcher kill, plus faults drawn from a mixture up to one per `meanGapMs`;
 * shuffled, and spread evenly (with jitter) over 5 %–60 % of the submit time, so that each one
 * (and its recovery, and the wait of a dispatcher fault for the previous one to end) happens while
 * jobs flow.
 */
export function planFaults(options: PlanOptions): PlannedFault[] {
  const random = new Random(options.seed);
  const meanGapMs = options.meanGapMs ?? 2500;
  const kinds: Array<{ kind: FaultKind; target?: number }> = [
    { kind: "worker_kill" },
    { kind: "worker_kill" },
    { kind: "worker_freeze" },
    { kind: "dispatcher_kill" },
  ];
  for (let d = 0; d < options.dispatchers; d++) kinds.push({ kind: "connection_cut", target: d }, { kind: "connection_blackhole", target: d });
  const total = Math.max(kinds.length, Math.floor(options.submitMs / meanGapMs));
  while (kinds.length < total) {
    let r = random.next();
    const extra = EXTRA_WEIGHTS.find(([, w]) => (r -= w) < 0)?.[0] ?? "worker_kill";
    kinds.push({ kind: extra });
  }
  random.shuffle(kinds);
  const span = options.submitMs * 0.55;
  return kinds.map(({ kind, target }, i) => ({
    kind,
    atMs: Math.round(options.submitMs * 0.05 + (span * (i + random.next() * 0.8)) / kinds.length),
    target: target ?? random.int(0, (kind.startsWith("worker") ? options.workers : options.dispatchers) - 1),
    durationMs: duration(kind, random),
  }));
}
