import { resolve } from "node:path";
import { OrchestratorError, invalidArgument } from "../../errors.ts";
import { waitSignal } from "../../signals.ts";
import { checkBoolean, checkInteger, checkObject, checkString, optional } from "../../validate.ts";
import type { JobContext } from "../types.ts";
import { checkPayloadFields, checkVariables } from "./payload.ts";
import { describeExit, runProcess } from "./process-runner.ts";

/** The payload of a shell job. Validated field by field; unknown fields are refused. */
export interface ShellPayload {
  /**
   * The command as an argv array, `["make", "test"]` (preferred: nothing is interpreted by a
   * shell), or a string run by `/bin/sh -c`, accepted only when the handler has `allowShell`.
   */
  command: readonly string[] | string;
  /** Working directory, relative to the handler's `cwd`. */
  cwd?: string;
  /** Variables added to the handler's environment. */
  env?: Record<string, string>;
  /** Kills the command (its whole process group) after this long, failing with `deadline_exceeded`. */
  timeoutMs?: number;
}

/** What a shell job returns when its command exits with code 0. */
export interface ShellResult {
  exitCode: 0;
  durationMs: number;
  /** The last lines the command printed on stdout (all of them are also streamed as log lines). */
  stdoutTail: string[];
}

/** Options of {@link createShellHandler}. */
export interface ShellHandlerOptions {
  /**
   * Accept the string form of `command`, run by `/bin/sh -c`. Off by default: with it on, any
   * job payload is a shell script on this worker.
   * @default false
   */
  allowShell?: boolean;
  /**
   * When set, the argv form may only run these executables (compared with `command[0]` as
   * written), and the string form is refused even with `allowShell`.
   * @default undefined (any executable)
   */
  allowedCommands?: readonly string[];
  /**
   * The directory commands run in, and that a payload's relative `cwd` is resolved against.
   * @default process.cwd()
   */
  cwd?: string;
  /**
   * The environment commands start from; a payload's `env` is added to it.
   * @default process.env
   */
  env?: NodeJS.ProcessEnv;
  /**
   * How long a cancelled command's process group gets between SIGTERM and SIGKILL.
   * @default 5000
   */
  graceMs?: number;
  /**
   * How many last lines of stdout the result and of stderr a failure carry.
   * @default 20
   */
  tailLines?: number;
}

const payloadFields = new Set(["command", "cwd", "env", "timeoutMs"]);

/**
 * Creates a handler that runs a command for a {@link ShellPayload}: its output streams to
 * `ctx.log` line by line, `ctx.signal` (or the payload's `timeoutMs`) kills its whole process
 * group (SIGTERM, then SIGKILL after `graceMs`) and rejects with the reason, and anything it
 * left running in its group is stopped when it exits.
 *
 * @throws {OrchestratorError} `invalid_argument` for a bad payload, a string command without
 * `allowShell` or a command not in `allowedCommands`; `handler_failed` with the exit code and
 * the last stderr lines when the command fails (not retryable when it cannot be started);
 * `deadline_exceeded` past `timeoutMs`.
 *
 * @example
 * ```ts
 * await serveWorker({ handlers: { shell: createShellHandler({ allowedCommands: ["make", "npm"] }) }, port: 50051 });
 * // then: client.submit({ type: "shell", payload: { command: ["make", "test"], cwd: "repo" } })
 * ```
 */
export function createShellHandler(options: ShellHandlerOptions = {}): (payload: ShellPayload, ctx: JobContext) => Promise<ShellResult> {
  checkObject("options", options);
  const allowShell = optional(options.allowShell, false, (value) => checkBoolean("allowShell", value));
  const allowedCommands = optional<ReadonlySet<string> | undefined>(options.allowedCommands, undefined, (value) => {
    if (!Array.isArray(value) || !value.every((item) => typeof item === "string" && item !== "")) {
      throw invalidArgument("allowedCommands", "an array of non-empty strings", value);
    }
    return new Set(value);
  });
  const cwd = optional(options.cwd, process.cwd(), (value) => checkString("cwd", value, 4096));
  const env = optional(options.env, process.env, (value) => checkObject("env", value) as NodeJS.ProcessEnv);
  const graceMs = optional(options.graceMs, 5000, (value) => checkInteger("graceMs", value, 0));
  const tailLines = optional(options.tailLines, 20, (value) => checkInteger("tailLines", value, 0, 10_000));

  return async (rawPayload: unknown, ctx: JobContext): Promise<ShellResult> => {
    const payload = parseShellPayload(rawPayload);
    let argv: readonly string[];
    if (typeof payload.command === "string") {
      if (!allowShell || allowedCommands) {
        throw invalidArgument(
          "payload.command",
          allowedCommands ? "an argv array (this worker restricts commands)" : "an argv array (this worker does not enable `allowShell`)",
          payload.command,
        );
      }
      argv = ["/bin/sh", "-c", payload.command];
    } else {
      argv = payload.command;
    }
    const [command = "", ...args] = argv;
    if (allowedCommands && !allowedCommands.has(command)) {
      throw invalidArgument("payload.command[0]", `one of ${[...allowedCommands].map((c) => `\`${c}\``).join(", ")}`, command);
    }
    const shown = typeof payload.command === "string" ? payload.command : argv.join(" ");
    const label = shown.length > 100 ? `${shown.slice(0, 97)}...` : shown;

    const { signal, dispose } = waitSignal({ signal: ctx.signal, timeoutMs: payload.timeoutMs }, `command \`${label}\``);
    try {
      const result = await runProcess({
        command,
        args,
        cwd: payload.cwd === undefined ? cwd : resolve(cwd, payload.cwd),
        env: { ...env, ...payload.env },
        signal: signal as AbortSignal,
        onLine: (line, stream) => ctx.log(line, stream),
        graceMs,
        tailLines,
      });
      if (result.exitCode !== 0) {
        const tail = result.stderrTail.slice(-5);
        throw new OrchestratorError("handler_failed", `command \`${label}\` ${describeExit(result)}${tail.length > 0 ? `:\n${tail.join("\n")}` : ""}`, {
          details: { exitCode: result.exitCode, signal: result.signalCode, stderrTail: [...result.stderrTail] },
        });
      }
      return { exitCode: 0, durationMs: result.durationMs, stdoutTail: [...result.stdoutTail] };
    } finally {
      dispose();
    }
  };
}

/**
 * Validates a shell payload.
 * @throws {OrchestratorError} `invalid_argument` (never retried) naming the bad field.
 */
export function parseShellPayload(payload: unknown): ShellPayload {
  const input = checkPayloadFields(payload, payloadFields);
  const command = input.command;
  let checked: readonly string[] | string;
  if (typeof command === "string") {
    checked = checkString("payload.command", command, 65_536);
  } else if (Array.isArray(command) && command.length > 0 && command.every((arg) => typeof arg === "string") && command[0] !== "") {
    checked = [...(command as string[])];
  } else {
    throw invalidArgument("payload.command", "a non-empty array of strings whose first is the executable, or a string", command);
  }
  const result: ShellPayload = { command: checked };
  if (input.cwd !== undefined) result.cwd = checkString("payload.cwd", input.cwd, 4096);
  if (input.env !== undefined) result.env = checkVariables("payload.env", input.env);
  if (input.timeoutMs !== undefined) result.timeoutMs = checkInteger("payload.timeoutMs", input.timeoutMs, 1);
  return result;
}
