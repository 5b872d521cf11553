import { invalidArgument } from "../errors.ts";
import { checkInteger, checkObject, checkString } from "../validate.ts";
import type { JobLogLine } from "./types.ts";

/**
 * The rules of the log lines a job store keeps, in one home for both stores: what a line may
 * hold, which lines are the same line, their order, and how many are kept. @internal
 */

/** Default `maxLogLines` of every store: the latest 1000 lines of each job. */
export const DEFAULT_MAX_LOG_LINES = 1000;
/** Longest line kept, in characters; a longer one is cut and ends with `…`. */
export const MAX_LOG_LINE_CHARS = 4000;
/** Most lines one `appendLogs` call takes. */
export const MAX_LOG_LINES_PER_APPEND = 1000;

/** Checks the input of `appendLogs`, cutting over-long lines. @throws {OrchestratorError} `invalid_argument` naming the field. */
export function checkLogLines(jobId: unknown, lines: unknown): { jobId: string; lines: JobLogLine[] } {
  const id = checkString("jobId", jobId, 256);
  if (!Array.isArray(lines) || lines.length > MAX_LOG_LINES_PER_APPEND) throw invalidArgument("lines", `an array of at most ${MAX_LOG_LINES_PER_APPEND} log lines`, lines);
  const checked = lines.map((value, i): JobLogLine => {
    const o = checkObject(`lines[${i}]`, value);
    if (typeof o.line !== "string") throw invalidArgument(`lines[${i}].line`, "a string", o.line);
    if (o.stream !== undefined && o.stream !== "stdout" && o.stream !== "stderr") throw invalidArgument(`lines[${i}].stream`, '"stdout" or "stderr"', o.stream);
    const line: JobLogLine = {
      at: checkInteger(`lines[${i}].at`, o.at, 0),
      attempt: checkInteger(`lines[${i}].attempt`, o.attempt, 1),
      fencingToken: checkInteger(`lines[${i}].fencingToken`, o.fencingToken, 0),
      seq: checkInteger(`lines[${i}].seq`, o.seq, 0),
      line: o.line.length > MAX_LOG_LINE_CHARS ? `${o.line.slice(0, MAX_LOG_LINE_CHARS - 1)}…` : o.line,
    };
    if (o.stream !== undefined) line.stream = o.stream;
    return line;
  });
  return { jobId: id, lines: checked };
}

/** The order lines are kept and read in: by run (its fencing token), then as the run wrote them. */
export function compareLogLines(a: JobLogLine, b: JobLogLine): number {
  return a.fencingToken - b.fencingToken || a.seq - b.seq;
}

/** `kept` with `added` merged in (a line already kept is not added twice), the latest `max` in order. */
export function mergeLogLines(kept: readonly JobLogLine[], added: readonly JobLogLine[], max: number): JobLogLine[] {
  const byKey = new Map<string, JobLogLine>();
  for (const line of [...kept, ...added]) {
    const key = `${line.fencingToken}:${line.seq}`;
    if (!byKey.has(key)) byKey.set(key, line);
  }
  return [...byKey.values()].sort(compareLogLines).slice(-max);
}
