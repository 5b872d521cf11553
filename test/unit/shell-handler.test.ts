import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, expectTypeOf, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { cancelError } from "../../src/signals.ts";
import { createShellHandler, parseShellPayload, type ShellPayload, type ShellResult } from "../../src/worker/handlers/shell.ts";
import type { JobHandler } from "../../src/worker/types.ts";
import { fakeJobContext } from "../helpers/job-context.ts";
import { isRunning, readPid, scriptDir } from "../helpers/processes.ts";

const scripts = scriptDir("blacktree-shell-");
afterAll(() => scripts.cleanup());

describe("createShellHandler", () => {
  it("is a JobHandler", () => {
    expectTypeOf(createShellHandler()).toExtend<JobHandler<ShellPayload, ShellResult>>();
  });

  it("runs the argv form without a shell, streams both streams as log lines and returns the stdout tail", async () => {
    const { ctx, logs } = fakeJobContext();
    const result = await createShellHandler()({ command: ["/bin/sh", "-c", 'echo "out $1"; echo err >&2', "sh", "$HOME; `id`"] }, ctx);
    expect(result).toEqual({ exitCode: 0, durationMs: expect.any(Number), stdoutTail: ["out $HOME; `id`"] });
    expect(logs).toEqual([
      { line: "out $HOME; `id`", stream: "stdout" },
      { line: "err", stream: "stderr" },
    ]);
  });

  it("resolves the payload's cwd against the handler's and adds the payload's env to the handler's", async () => {
    mkdirSync(join(scripts.dir, "repo"), { recursive: true });
    const handler = createShellHandler({ cwd: scripts.dir, env: { PATH: process.env.PATH, BASE: "base" } });
    const result = await handler({ command: ["/bin/sh", "-c", 'echo "$(pwd) $BASE $EXTRA"'], cwd: "repo", env: { EXTRA: "extra" } }, fakeJobContext().ctx);
    expect(result.stdoutTail).toEqual([`${join(scripts.dir, "repo")} base extra`]);
  });

  it("fails a non-zero exit with handler_failed carrying the exit code and the last stderr lines", async () => {
    const command = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7; do echo \"problem $i\" >&2; done; exit 4"];
    const error = await createShellHandler()({ command }, fakeJobContext().ctx).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "handler_failed", retryable: true, details: { exitCode: 4 } });
    const message = (error as Error).message;
    expect(message).toContain("exited with code 4");
    expect(message).toContain("problem 3\nproblem 4\nproblem 5\nproblem 6\nproblem 7");
    expect(message).not.toContain("problem 2");
  });

  it("refuses the string form unless the worker enables allowShell, and runs it through /bin/sh when it does", async () => {
    await expect(createShellHandler()({ command: "echo hi | tr h H" }, fakeJobContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      retryable: false,
      message: expect.stringContaining("allowShell"),
    });
    const result = await createShellHandler({ allowShell: true })({ command: "echo hi | tr h H" }, fakeJobContext().ctx);
    expect(result.stdoutTail).toEqual(["Hi"]);
  });

  it("runs only allowedCommands when they are set, and then no string form", async () => {
    const handler = createShellHandler({ allowedCommands: ["/bin/echo"], allowShell: true });
    await expect(handler({ command: ["/bin/echo", "ok"] }, fakeJobContext().ctx)).resolves.toMatchObject({ stdoutTail: ["ok"] });
    await expect(handler({ command: ["/bin/sh", "-c", "echo no"] }, fakeJobContext().ctx)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "payload.command[0]" },
    });
    await expect(handler({ command: "echo no" }, fakeJobContext().ctx)).rejects.toMatchObject({ code: "invalid_argument" });
  });

  it("on cancel kills the command's whole process group and rejects with the signal's reason", async () => {
    const pidFile = join(scripts.dir, "cancel-child.pid");
    const script = scripts.write("cancel.sh", `sleep 30 & echo $! > '${pidFile}'; echo "leader $$"; echo ready; wait`);
    const controller = new AbortController();
    const reason = cancelError("requested");
    let leader = 0;
    const { ctx } = fakeJobContext({
      signal: controller.signal,
      log: (line) => {
        if (line.startsWith("leader ")) leader = Number(line.slice(7));
        if (line === "ready") controller.abort(reason);
      },
    });
    await expect(createShellHandler()({ command: [script] }, ctx)).rejects.toBe(reason);
    expect(isRunning(leader)).toBe(false);
    expect(isRunning(readPid(pidFile))).toBe(false);
  });

  it("kills the command after the payload's timeoutMs with deadline_exceeded", async () => {
    const pidFile = join(scripts.dir, "timeout-child.pid");
    const script = scripts.write("slow.sh", `sleep 30 & echo $! > '${pidFile}'; wait`);
    const started = performance.now();
    await expect(createShellHandler()({ command: [script], timeoutMs: 150 }, fakeJobContext().ctx)).rejects.toMatchObject({
      code: "deadline_exceeded",
      message: expect.stringContaining("timed out after 150 ms"),
    });
    expect(performance.now() - started).toBeLessThan(2000);
    expect(isRunning(readPid(pidFile))).toBe(false);
  });

  it("fails without retry when the executable does not exist", async () => {
    await expect(createShellHandler()({ command: ["/nonexistent/tool"] }, fakeJobContext().ctx)).rejects.toMatchObject({
      code: "handler_failed",
      retryable: false,
      details: { errno: "ENOENT" },
    });
  });

  it("refuses bad options with invalid_argument", () => {
    expect(() => createShellHandler({ allowShell: "yes" as unknown as boolean })).toThrow(/`allowShell`/);
    expect(() => createShellHandler({ allowedCommands: [""] })).toThrow(/`allowedCommands`/);
  });
});

describe("parseShellPayload", () => {
  it.each([
    ["not an object", ["ls"], "payload"],
    ["an empty argv", { command: [] }, "payload.command"],
    ["an argv with a non-string", { command: ["ls", 1] }, "payload.command"],
    ["an argv starting with an empty string", { command: ["", "x"] }, "payload.command"],
    ["an empty string command", { command: "" }, "payload.command"],
    ["an env value that is no string", { command: ["ls"], env: { A: 1 } }, "payload.env.A"],
    ["an env key that is no variable name", { command: ["ls"], env: { "A=B": "1" } }, "payload.env"],
    ["a timeoutMs of 0", { command: ["ls"], timeoutMs: 0 }, "payload.timeoutMs"],
    ["an unknown field", { command: ["ls"], args: ["-l"] }, "payload.args"],
  ])("refuses %s as a non-retryable invalid_argument", (_, payload, field) => {
    expect(() => parseShellPayload(payload)).toThrow(expect.objectContaining({ code: "invalid_argument", retryable: false, details: { field } }));
  });
});
