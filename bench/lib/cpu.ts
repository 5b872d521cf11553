/**
 * CPU and clock sampling for benchmark processes: our own children report `process.cpuUsage()`
 * over IPC (see child.ts); processes we did not start (the broker, Redis) or that died are read
 * from /proc/<pid>/stat.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** Wall-clock epoch milliseconds with sub-millisecond resolution, comparable across processes of one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** This process's CPU time (user + system) in microseconds. */
export function selfCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * CPU time (utime + stime) of process `pid` in microseconds, from /proc/<pid>/stat, with the
 * kernel's clock-tick resolution (10 ms at CLK_TCK=100). `null` when the process is gone or /proc
 * is not there.
 */
export function procCpuUs(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // Field 2 (comm) may contain spaces and parentheses: parse after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After comm, fields start at field 3 (state); utime is field 14, stime field 15.
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return ((utime + stime) * 1e6) / clockTicks();
}

/** Pids of running processes whose command name (/proc/<pid>/comm) equals `name`. */
export function findPids(name: string): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() === name) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

/** Measures the CPU a set of outside processes (found by command name, or given by pid) spends between `start()` and `stop()`. */
export class ExternalCpu {
  readonly #pids: number[];
  #start = new Map<number, number>();

  constructor(processes: string | readonly number[]) {
    this.#pids = typeof processes === "string" ? findPids(processes) : [...processes];
  }

  /** Whether any process of that name was found. */
  get found(): boolean {
    return this.#pids.length > 0;
  }

  start(): void {
    this.#start = new Map();
    for (const pid of this.#pids) {
      const us = procCpuUs(pid);
      if (us !== null) this.#start.set(pid, us);
    }
  }

  /** CPU microseconds used since `start()` by all of them; `null` when none was found. */
  stop(): number | null {
    if (this.#start.size === 0) return null;
    let total = 0;
    for (const [pid, before] of this.#start) {
      const after = procCpuUs(pid);
      if (after !== null) total += after - before;
    }
    return total;
  }
}
