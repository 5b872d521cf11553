/**
 * Append-only logs of the chaos run: one file per worker process and per dispatcher process,
 * one tab-separated line per record. Each line is one `write(2)` on an `O_APPEND` descriptor, so
 * it is in the kernel before the handler or listener returns and survives a SIGKILL of its writer
 * (no fsync: the machine does not crash, only processes do).
 */
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** A log file written one line at a time. */
export class AppendLog {
  readonly #fd: number;

  /** Opens (creates) `path` for appending. */
  constructor(path: string) {
    this.#fd = openSync(path, "a");
  }

  /** Writes one record: fields joined by tabs (tabs and newlines inside a field become spaces). */
  write(...fields: ReadonlyArray<string | number | undefined>): void {
    const line = fields.map((f) => String(f ?? "").replace(/[\t\n]/g, " ")).join("\t");
    writeSync(this.#fd, `${line}\n`);
  }

  close(): void {
    closeSync(this.#fd);
  }
}

/** File name of a worker process's log. */
export function workerLogName(pid: number): string {
  return `worker-${pid}.log`;
}

/** File name of a dispatcher process's log: `slot` is d0/d1, `incarnation` counts restarts from 1. */
export function dispatcherLogName(slot: string, incarnation: number): string {
  return `dispatcher-${slot}-${incarnation}.log`;
}

/** One record read back: its file and its fields. */
export interface LogRecord {
  file: string;
  fields: string[];
}

/**
 * Reads every complete line of the files in `dir` whose names match `pattern`. A last line
 * without its newline (its writer died mid-write, which `write(2)` of a short line does not do,
 * but be safe) is skipped.
 */
export function readLogs(dir: string, pattern: RegExp): LogRecord[] {
  const records: LogRecord[] = [];
  for (const file of readdirSync(dir).filter((name) => pattern.test(name)).sort()) {
    const text = readFileSync(join(dir, file), "utf8");
    const lines = text.split("\n");
    lines.pop(); // "" after the last newline, or an unfinished line
    for (const line of lines) if (line !== "") records.push({ file, fields: line.split("\t") });
  }
  return records;
}
