/**
 * How long processes were runnable but held off a CPU (the kernel's run-queue wait, second field
 * of /proc/<pid>/task/<tid>/schedstat, in ns), sampled over time, so a slow job can be checked
 * against what the machine did to the processes on its path while it waited.
 */
import { readdirSync, readFileSync } from "node:fs";
import { nowMs } from "./cpu.ts";

/** The threads of one group, e.g. RabbitMQ's schedulers, or one Node process's main thread. */
export interface ThreadGroup {
  name: string;
  /** schedstat files of the group's threads. */
  files: string[];
}

/** The main (JavaScript) thread of process `pid`. */
export function mainThread(name: string, pid: number): ThreadGroup {
  return { name, files: [`/proc/${pid}/task/${pid}/schedstat`] };
}

/** The threads of process `pid` whose command name `keep` accepts (e.g. beam.smp's `1_scheduler`). */
export function threadsOf(name: string, pid: number, keep: (comm: string) => boolean): ThreadGroup {
  const files: string[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (keep(readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim())) files.push(`/proc/${pid}/task/${tid}/schedstat`);
    } catch {
      // The thread ended while we looked.
    }
  }
  return { name, files };
}

/** [ns on a CPU, ns runnable but waiting] of one thread; NaN when it is gone. */
const schedstat = (file: string): [number, number] => {
  try {
    const [run, wait] = readFileSync(file, "utf8").split(" ");
    return [Number(run), Number(wait)];
  } catch {
    return [NaN, NaN];
  }
};

/** Samples the run-queue wait of some thread groups every `periodMs` until stopped. */
export class RunQueueSampler {
  readonly groups: ThreadGroup[];
  /** [epoch ms, [ns on a CPU, ns waiting] of each group (summed over its threads)]. */
  readonly samples: Array<[number, Array<[number, number]>]> = [];
  readonly #timer: NodeJS.Timeout;

  constructor(groups: ThreadGroup[], periodMs = 25) {
    this.groups = groups.filter((g) => g.files.length > 0 && g.files.every((f) => Number.isFinite(schedstat(f)[1])));
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), periodMs).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#sample();
  }

  #sample(): void {
    // Stamped halfway through the reads: this process may itself wait for a CPU between them.
    const before = nowMs();
    const waits = this.groups.map((g) =>
      g.files.reduce<[number, number]>((sum, f) => {
        const [run, wait] = schedstat(f);
        return [sum[0] + (run || 0), sum[1] + (wait || 0)];
      }, [0, 0]),
    );
    this.samples.push([(before + nowMs()) / 2, waits]);
  }

  /**
   * Share of the time from `from` to `to` (epoch ms, widened to the enclosing samples) that the
   * group's threads spent runnable but waiting (`what` "wait") or on a CPU ("run"), averaged over
   * its threads: 0.5 = half the time.
   */
  share(group: string, from: number, to: number, what: "run" | "wait" = "wait"): number {
    const g = this.groups.findIndex((x) => x.name === group);
    if (g < 0 || this.samples.length < 2) return NaN;
    let i = 0;
    while (i + 1 < this.samples.length && this.samples[i + 1]![0] <= from) i++;
    let j = i + 1;
    while (j < this.samples.length - 1 && this.samples[j]![0] < to) j++;
    const a = this.samples[i]!;
    const b = this.samples[Math.min(j, this.samples.length - 1)]!;
    if (b[0] <= a[0]) return NaN;
    const k = what === "run" ? 0 : 1;
    return (b[1][g]![k] - a[1][g]![k]) / 1e6 / (b[0] - a[0]) / this.groups[g]!.files.length;
  }
}
