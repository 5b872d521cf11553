import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { CONFORMANCE_CHECKS, runConformance } from "../../src/conformance/checks.ts";
import { SessionResponseSchema, type SessionRequest, type SessionResponse } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import { workerServiceDefinition } from "../../src/wire/wire.ts";
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

describe("blacktree-conformance's stall check against a worker that ignores the stall rule", () => {
  const STALL_CHECK = "holds a job assigned on a stalled session until a fresh ping round trip";
  let server: Server;
  let address: string;
  beforeAll(async () => {
    // Written on grpc-js alone: answers every Ping and runs every Assign at once, stalled or not.
    server = new Server();
    server.addService(workerServiceDefinition, {
      session(call: ServerDuplexStream<SessionRequest, SessionResponse>) {
        const send = (messages: MessageInitShape<typeof SessionResponseSchema>["messages"]) => call.write(create(SessionResponseSchema, { messages }));
        send([{ kind: { case: "hello", value: { worker: { slots: 1, jobTypes: [CONFORMANCE_JOB_TYPE], version: "eager-1" } } } }]);
        call.on("data", (request: SessionRequest) => {
          for (const { kind } of request.messages) {
            if (kind.case === "ping") send([{ kind: { case: "pong", value: { seq: kind.value.seq } } }]);
            if (kind.case === "assign") send([{ kind: { case: "result", value: { jobId: kind.value.jobId, attempt: kind.value.attempt, outcome: { case: "value", value: kind.value.payload } } } }]);
          }
        });
        call.on("end", () => call.end());
      },
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  it("fails the stall check, naming what arrived before the fresh round trip", async () => {
    expect(CONFORMANCE_CHECKS).toContain(STALL_CHECK);
    const results = await runConformance(address, { only: [STALL_CHECK] });
    expect(results.map((r) => r.name)).toEqual([STALL_CHECK]);
    expect(results[0]!.ok).toBe(false);
    expect(results[0]!.detail).toContain("the job started on a stalled session");
  });
});
