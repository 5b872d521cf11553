import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONFORMANCE_CHECKS, runConformance } from "../../src/conformance/checks.ts";
import { CONFORMANCE_JOB_TYPE, conformanceEcho } from "../../src/conformance/echo-handler.ts";
import { serveWorker, type WorkerServer } from "../../src/worker/serve-worker.ts";
import type { JobContext } from "../../src/worker/types.ts";

const run = promisify(execFile);
const bin = fileURLToPath(new URL("../../src/conformance/bin.ts", import.meta.url));

describe("blacktree-conformance against serveWorker()", () => {
  let worker: WorkerServer;
  beforeAll(async () => {
    worker = await serveWorker({ port: 0, slots: 1, handlers: { [CONFORMANCE_JOB_TYPE]: conformanceEcho } });
  });
  afterAll(() => worker.close());

  it("passes every check, one result per check in order", async () => {
    const seen: string[] = [];
    const results = await runConformance(worker.address, {}, (result) => seen.push(result.name));
    expect(results.map((r) => `${r.ok ? "pass" : "FAIL"} ${r.name}: ${r.detail}`).filter((line) => line.startsWith("FAIL"))).toEqual([]);
    expect(seen).toEqual(CONFORMANCE_CHECKS);
  });

  it("runs as a command: a line per check and exit code 0", async () => {
    const { stdout } = await run(process.execPath, ["--no-warnings", bin, worker.address], { timeout: 60_000 });
    const lines = stdout.split("\n").filter((line) => /^(pass|FAIL) /.test(line));
    expect(lines).toHaveLength(CONFORMANCE_CHECKS.length);
    expect(lines.every((line) => line.startsWith("pass "))).toBe(true);
    expect(stdout).toContain(`all ${CONFORMANCE_CHECKS.length} checks passed`);
  });
});

describe("blacktree-conformance against a worker that breaks the protocol", () => {
  let worker: WorkerServer;
  beforeAll(async () => {
    // Ignores cancellation and reports progress out of order: the cancel and progress checks must fail.
    const stubborn = async (payload: { steps?: number; sleepMs?: number; value?: unknown; fail?: string }, ctx: JobContext) => {
      if (payload.fail !== undefined) throw new Error("always retryable");
      for (let i = payload.steps ?? 0; i >= 1; i--) ctx.progress(i / (payload.steps ?? 1));
      if (payload.sleepMs) await new Promise((resolve) => setTimeout(resolve, Math.min(payload.sleepMs ?? 0, 2000)));
      return payload.value;
    };
    worker = await serveWorker({ port: 0, slots: 1, handlers: { [CONFORMANCE_JOB_TYPE]: stubborn } });
  });
  afterAll(() => worker.close());

  it("reports the failing checks by name and exits 1", async () => {
    const results = await runConformance(worker.address, { timeoutMs: 5000 });
    const failed = results.filter((r) => !r.ok).map((r) => r.name);
    expect(failed).toContain("sends progress (clamped to 0..1) and log lines in order, before the result");
    expect(failed).toContain("marks a permanent failure non_retryable and a plain one retryable");
    expect(results.find((r) => r.name.startsWith("answers the standard health check"))?.ok).toBe(true);
    const exit = await run(process.execPath, ["--no-warnings", bin, worker.address, "--timeout-ms", "5000"], { timeout: 90_000 }).then(
      () => 0,
      (error: { code?: number }) => error.code,
    );
    expect(exit).toBe(1);
  }, 120_000);
});
