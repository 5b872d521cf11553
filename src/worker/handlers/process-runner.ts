import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { setTimeout as sleep } from "node:timers/promises";
import { OrchestratorError, invalidArgument } from "../../errors.ts";
import { abortReason } from "../../signals.ts";
import { checkFunction, checkInteger, checkObject, checkSignal, checkString, optional } from "../../validate.ts";

/** Which output stream a line came from. */
export type OutputStream = "stdout" | "stderr";

/** Options of {@link runProcess}. */
export interface RunProcessOptions {
  /** The executable; looked up on the `PATH` of `env` when it contains no slash. Never run through a shell. */
  command: string;
  /**
   * Its arguments, passed as they are.
   * @default []
   */
  args?: readonly string[];
  /**
   * Working directory of the process.
   * @default process.cwd()
   */
  cwd?: string;
  /**
   * The process's whole environment (not merged with anything).
   * @default process.env
   */
  env?: NodeJS.ProcessEnv;
  /**
   * Aborting it terminates the process's whole group (SIGTERM, then SIGKILL after `graceMs`)
   * and makes `runProcess` reject with the signal's reason once the group is gone.
   */
  signal?: AbortSignal;
  /**
   * Called with every output line, without its line break, in order within each stream; a
   * partial last line is delivered when the stream ends. A throw from it is ignored.
   */
  onLine?: (line: string, stream: OutputStream) => void;
  /**
   * How long the group gets between SIGTERM and SIGKILL.
   * @default 5000
   */
  graceMs?: number;
  /**
   * How many last lines of each stream the result keeps.
   * @default 20
   */
  tailLines?: number;
  /**
   * A line longer than this many characters is delivered in pieces of this size, so a
   * progress bar without line breaks cannot grow a buffer without bound.
   * @default 65536
   */
  maxLineLength?: number;
}

/** How a process run by {@link runProcess} ended. */
export interface ProcessResult {
  /** The process id, which is also its process group id. */
  readonly pid: number;
  /** The exit code, or null when a signal ended the process. */
  readonly exitCode: number | null;
  /** The signal that ended the process, or null when it exited. */
  readonly signalCode: NodeJS.Signals | null;
  readonly durationMs: number;
  /** The last `tailLines` lines of stdout. */
  readonly stdoutTail: readonly string[];
  /** The last `tailLines` lines of stderr. */
  readonly stderrTail: readonly string[];
}

/** How often the group is looked at while it is being terminated. */
const pollMs = 20;
/** How long the output pipes may stay open after the group is gone (held by an escaped process). */
const drainMs = 2000;

/**
 * Runs a command in its own process group, streams its output line by line and resolves when
 * it has exited, whatever its exit code (the caller decides what a failure is).
 *
 * The process is the leader of a new process group (`detached`), so everything it starts can be
 * stopped with it: on abort the whole group gets SIGTERM, then SIGKILL after `graceMs`, and the
 * promise rejects with the signal's reason only once no process of the group is left. When the
 * leader exits on its own, whatever it left running in its group is terminated the same way
 * before the promise resolves: a job leaves nothing behind. (Process groups are POSIX; on
 * Windows only the process itself is killed.)
 *
 * @throws {OrchestratorError} `invalid_argument` for bad options; `handler_failed` (not
 * retryable, `details.errno` set) when the process cannot be started, for example `ENOENT`
 * when the command or the working directory does not exist; the signal's reason when aborted.
 *
 * @example
 * ```ts
 * const result = await runProcess({ command: "make", args: ["test"], signal: ctx.signal, onLine: (line, stream) => ctx.log(line, stream) });
 * if (result.exitCode !== 0) throw new Error(`make failed: ${result.stderrTail.join("\n")}`);
 * ```
 */
export async function runProcess(options: RunProcessOptions): Promise<ProcessResult> {
  const o = resolveOptions(options);
  if (o.signal?.aborted) throw abortReason(o.signal);
  const started = performance.now();
  const group = process.platform !== "win32";

  let child: ChildProcess;
  try {
    child = spawn(o.command, o.args, { cwd: o.cwd, env: o.env, detached: group, stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
  } catch (error) {
    throw spawnError(o.command, o.cwd, error);
  }

  const tails: Record<OutputStream, string[]> = { stdout: [], stderr: [] };
  const emit = (line: string, stream: OutputStream) => {
    const tail = tails[stream];
    tail.push(line);
    if (tail.length > o.tailLines) tail.shift();
    try {
      o.onLine?.(line, stream);
    } catch {
      // The caller's sink must not break the run; ctx.log never throws anyway.
    }
  };
  const readers = [lineReader(child, "stdout", o.maxLineLength, emit), lineReader(child, "stderr", o.maxLineLength, emit)];

  return new Promise<ProcessResult>((resolve, reject) => {
    const pid = child.pid;
    let exited = false;
    let aborted = false;
    let terminating: Promise<void> | undefined;

    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (group && pid !== undefined) process.kill(-pid, signal);
        else child.kill(signal);
      } catch {
        // ESRCH: nothing left to signal.
      }
    };
    const terminate = () =>
      (terminating ??= (async () => {
        signalGroup("SIGTERM");
        const killAt = performance.now() + o.graceMs;
        while (groupAlive(child)) {
          if (performance.now() >= killAt) {
            signalGroup("SIGKILL");
            break;
          }
          await sleep(pollMs);
        }
        // SIGKILL cannot be ignored, but the kernel takes a moment to tear the processes down.
        const giveUpAt = performance.now() + 2000;
        while (groupAlive(child) && performance.now() < giveUpAt) await sleep(pollMs);
      })());

    const onAbort = () => {
      if (exited) return; // it finished on its own first: its result stands
      aborted = true;
      void terminate();
    };
    o.signal?.addEventListener("abort", onAbort, { once: true });

    const closed = new Promise<void>((resolveClosed) => child.once("close", () => resolveClosed()));

    child.once("error", (error) => {
      // Errors after a successful spawn (a failed kill) change nothing: exit/close still come.
      if (pid !== undefined) return;
      o.signal?.removeEventListener("abort", onAbort);
      reject(spawnError(o.command, o.cwd, error));
    });

    child.once("exit", (exitCode, signalCode) => {
      exited = true;
      void (async () => {
        if (terminating !== undefined || groupAlive(child)) await terminate();
        await Promise.race([closed, sleep(drainMs)]);
        for (const reader of readers) reader.finish();
        o.signal?.removeEventListener("abort", onAbort);
        if (aborted && o.signal) {
          reject(abortReason(o.signal));
          return;
        }
        resolve({
          pid: pid as number,
          exitCode,
          signalCode,
          durationMs: Math.round(performance.now() - started),
          stdoutTail: tails.stdout,
          stderrTail: tails.stderr,
        });
      })();
    });
  });
}

/** How a process ended, for messages: `exited with code 2`, `was killed by SIGKILL`. */
export function describeExit(result: Pick<ProcessResult, "exitCode" | "signalCode">): string {
  return result.exitCode === null ? `was killed by ${result.signalCode}` : `exited with code ${result.exitCode}`;
}

function resolveOptions(options: RunProcessOptions) {
  checkObject("options", options);
  const args = optional(options.args, [] as readonly string[], (value) => {
    if (!Array.isArray(value) || !value.every((arg) => typeof arg === "string")) throw invalidArgument("args", "an array of strings", value);
    return value as readonly string[];
  });
  return {
    command: checkString("command", options.command, 4096),
    args,
    cwd: optional(options.cwd, process.cwd(), (value) => checkString("cwd", value, 4096)),
    env: optional(options.env, process.env, (value) => checkObject("env", value) as NodeJS.ProcessEnv),
    signal: checkSignal("signal", options.signal),
    onLine: optional(options.onLine, undefined, (value) => checkFunction<NonNullable<RunProcessOptions["onLine"]>>("onLine", value)),
    graceMs: optional(options.graceMs, 5000, (value) => checkInteger("graceMs", value, 0)),
    tailLines: optional(options.tailLines, 20, (value) => checkInteger("tailLines", value, 0, 10_000)),
    maxLineLength: optional(options.maxLineLength, 65_536, (value) => checkInteger("maxLineLength", value, 1)),
  };
}

/** Splits one output stream into lines (UTF-8 safe across chunks). `finish()` flushes a partial last line once. */
function lineReader(child: ChildProcess, stream: OutputStream, maxLineLength: number, emit: (line: string, stream: OutputStream) => void) {
  const decoder = new StringDecoder("utf8");
  let partial = "";
  let finished = false;
  const emitLine = (line: string) => {
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    for (let at = 0; at < text.length; at += maxLineLength) emit(text.slice(at, at + maxLineLength), stream);
    if (text === "") emit(text, stream);
  };
  const push = (text: string) => {
    const lines = (partial + text).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) emitLine(line);
    while (partial.length > maxLineLength) {
      emit(partial.slice(0, maxLineLength), stream);
      partial = partial.slice(maxLineLength);
    }
  };
  const readable = child[stream];
  readable?.on("data", (chunk: Buffer) => push(decoder.write(chunk)));
  const finish = () => {
    if (finished) return;
    finished = true;
    push(decoder.end());
    if (partial !== "") emitLine(partial);
    partial = "";
    readable?.destroy();
  };
  readable?.once("end", finish);
  return { finish };
}

/**
 * Whether any process of the child's group is still running. Zombies do not count: where PID 1
 * does not reap orphans (some containers and sandboxes) they linger, harmless, for ever.
 */
function groupAlive(child: ChildProcess): boolean {
  const pid = child.pid;
  if (pid === undefined) return false;
  if (process.platform === "win32") return child.exitCode === null && child.signalCode === null;
  try {
    process.kill(-pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  return process.platform === "linux" ? linuxGroupHasLiveMember(pid) : true;
}

function linuxGroupHasLiveMember(pgid: number): boolean {
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return true;
  }
  for (const name of names) {
    const first = name.charCodeAt(0);
    if (first < 48 || first > 57) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // it exited while we looked
    }
    // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so cut at the last ")".
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ", 3);
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") return true;
  }
  return false;
}

function spawnError(command: string, cwd: string, error: unknown): OrchestratorError {
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  // spawn reports a missing working directory as ENOENT of the command; say which it was.
  const message =
    errno === "ENOENT" && !existsSync(cwd)
      ? `cannot start \`${command}\`: working directory ${cwd} does not exist`
      : `cannot start \`${command}\`: ${error instanceof Error ? error.message : String(error)}`;
  return new OrchestratorError("handler_failed", message, {
    cause: error,
    retryable: false,
    details: { command, ...(errno === undefined ? {} : { errno }), ...(errno === "ENOENT" && !existsSync(cwd) ? { cwd } : {}) },
  });
}
