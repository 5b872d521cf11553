import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { cancelError } from "../../src/signals.ts";
import { runProcess, type OutputStream } from "../../src/worker/handlers/process-runner.ts";
import { isRunning, readPid, scriptDir } from "../helpers/processes.ts";

const scripts = scriptDir();
afterAll(() => scripts.cleanup());

/** Collects lines per stream. */
function collector() {
  const lines: Record<OutputStream, string[]> = { stdout: [], stderr: [] };
  return { lines, onLine: (line: string, stream: OutputStream) => lines[stream].push(line) };
}

describe("runProcess", () => {
  it("streams stdout and stderr as lines, joining lines split across writes and flushing a last partial line", async () => {
    const script = scripts.write(
      "output.sh",
      String.raw`printf 'a'; sleep 0.05; printf 'b\nc'; printf 'err1\nerr' >&2; sleep 0.05; printf '2\n' >&2
printf '\nwin\r\n'; printf '\303'; sleep 0.05; printf '\251t\n'; printf 'no-newline'`,
    );
    const { lines, onLine } = collector();
    const result = await runProcess({ command: script, onLine });
    expect(lines.stdout).toEqual(["ab", "c", "win", "\u00e9t", "no-newline"]);
    expect(lines.stderr).toEqual(["err1", "err2"]);
    expect(result.exitCode).toBe(0);
    expect(result.signalCode).toBeNull();
    expect(result.stdoutTail).toEqual(lines.stdout);
  });

  it("resolves with a non-zero exit code and keeps only the last tailLines lines", async () => {
    const script = scripts.write("fail.sh", `for i in 1 2 3 4; do echo "line $i" >&2; done; exit 3`);
    const result = await runProcess({ command: script, tailLines: 2 });
    expect(result.exitCode).toBe(3);
    expect(result.stderrTail).toEqual(["line 3", "line 4"]);
  });

  it("reports the signal that ended the process", async () => {
    const result = await runProcess({ command: "/bin/sh", args: ["-c", "kill -9 $$"] });
    expect(result.exitCode).toBeNull();
    expect(result.signalCode).toBe("SIGKILL");
  });

  it("passes args, cwd and env through without a shell", async () => {
    const { lines, onLine } = collector();
    await runProcess({
      command: "/bin/sh",
      args: ["-c", 'echo "$1|$(pwd)|$GREETING"', "sh", "$HOME; echo injected"],
      cwd: scripts.dir,
      env: { GREETING: "hi", PATH: process.env.PATH },
      onLine,
    });
    expect(lines.stdout).toEqual([`$HOME; echo injected|${scripts.dir}|hi`]);
  });

  it("delivers a line longer than maxLineLength in pieces", async () => {
    const { lines, onLine } = collector();
    await runProcess({ command: "/bin/sh", args: ["-c", "printf '%s\\n' abcdefghij"], maxLineLength: 4, onLine });
    expect(lines.stdout).toEqual(["abcd", "efgh", "ij"]);
  });

  it("keeps running when onLine throws", async () => {
    const result = await runProcess({
      command: "/bin/sh",
      args: ["-c", "echo one; echo two"],
      onLine: () => {
        throw new Error("sink broke");
      },
    });
    expect(result.stdoutTail).toEqual(["one", "two"]);
  });

  it("on abort kills the whole process group, including a child, and rejects with the signal's reason once it is gone", async () => {
    const pidFile = join(scripts.dir, "child-1.pid");
    const script = scripts.write("tree.sh", `sleep 30 & echo $! > '${pidFile}'; echo "leader $$"; echo ready; wait`);
    const controller = new AbortController();
    const reason = cancelError("requested");
    let leader = 0;
    const started = performance.now();
    const run = runProcess({
      command: script,
      signal: controller.signal,
      graceMs: 5000,
      onLine: (line) => {
        if (line.startsWith("leader ")) leader = Number(line.slice(7));
        if (line === "ready") controller.abort(reason);
      },
    });
    await expect(run).rejects.toBe(reason);
    const child = readPid(pidFile);
    expect(leader).toBeGreaterThan(0);
    expect(isRunning(leader)).toBe(false);
    expect(isRunning(child)).toBe(false);
    // SIGTERM was enough: no wait for the grace period.
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("sends SIGKILL after graceMs to a group that ignores SIGTERM", async () => {
    const pidFile = join(scripts.dir, "child-2.pid");
    // An ignored signal stays ignored across fork and exec, so the child ignores SIGTERM too.
    const script = scripts.write("stubborn.sh", `trap '' TERM; sleep 30 & echo $! > '${pidFile}'; echo ready; while :; do sleep 0.05; done`);
    const controller = new AbortController();
    const started = performance.now();
    const run = runProcess({
      command: script,
      signal: controller.signal,
      graceMs: 300,
      onLine: (line) => line === "ready" && controller.abort(cancelError("timeout")),
    });
    await expect(run).rejects.toMatchObject({ code: "deadline_exceeded" });
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(isRunning(readPid(pidFile))).toBe(false);
  });

  it("terminates what the command left running in its group when it exits", async () => {
    const pidFile = join(scripts.dir, "child-3.pid");
    const script = scripts.write("leftover.sh", `sleep 30 & echo $! > '${pidFile}'; echo done`);
    const result = await runProcess({ command: script });
    expect(result.exitCode).toBe(0);
    expect(result.stdoutTail).toEqual(["done"]);
    expect(isRunning(readPid(pidFile))).toBe(false);
  });

  it("rejects with the reason at once, starting nothing, when the signal already fired", async () => {
    const marker = join(scripts.dir, "started");
    const reason = cancelError("shutdown");
    await expect(
      runProcess({ command: "/bin/sh", args: ["-c", `touch '${marker}'`], signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    expect(existsSync(marker)).toBe(false);
  });

  it("fails with a non-retryable handler_failed naming ENOENT when the command does not exist", async () => {
    const error = await runProcess({ command: "/nonexistent/blacktree-cmd" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "handler_failed", retryable: false, details: { errno: "ENOENT" } });
    expect((error as Error).message).toContain("/nonexistent/blacktree-cmd");
  });

  it("says so when the working directory does not exist", async () => {
    await expect(runProcess({ command: "/bin/sh", args: ["-c", "true"], cwd: "/nonexistent/dir" })).rejects.toThrow(
      /working directory \/nonexistent\/dir does not exist/,
    );
  });

  it("rejects bad options with invalid_argument naming the field", async () => {
    await expect(runProcess({ command: "" })).rejects.toMatchObject({ code: "invalid_argument", details: { field: "command" } });
    await expect(runProcess({ command: "true", args: ["ok", 1 as unknown as string] })).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "args" },
    });
    await expect(runProcess({ command: "true", graceMs: -1 })).rejects.toMatchObject({ details: { field: "graceMs" } });
  });
});
