import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { CancelReason, LogStream, SessionRequestSchema, SessionResponseSchema } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { SessionRequest, SessionResponse } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import { Batcher } from "../../src/wire/batcher.ts";
import {
  cancelReasonFromWire,
  cancelReasonToWire,
  decodeJson,
  encodeJson,
  healthServiceDefinition,
  logStreamFromWire,
  logStreamToWire,
  methodOf,
  workerServiceDefinition,
} from "../../src/wire/wire.ts";

describe("grpc-js service definitions from the protobuf-es schemas", () => {
  it("describes every method with its path and streaming kind", () => {
    const paths = Object.values(workerServiceDefinition).map((m) => [m.path, m.requestStream, m.responseStream]);
    expect(paths).toEqual([
      ["/blacktree.orchestrator.v1.WorkerService/Session", true, true],
      ["/blacktree.orchestrator.v1.WorkerService/Execute", false, true],
      ["/blacktree.orchestrator.v1.WorkerService/Cancel", false, false],
      ["/blacktree.orchestrator.v1.WorkerService/Describe", false, false],
    ]);
    expect(methodOf(healthServiceDefinition, "watch").path).toBe("/grpc.health.v1.Health/Watch");
    expect(() => methodOf(healthServiceDefinition, "list")).toThrow(OrchestratorError);
  });

  it("round-trips a batch of session messages through the binary codec, in order", () => {
    const session = methodOf(workerServiceDefinition, "session");
    const request = create(SessionRequestSchema, {
      messages: [
        { kind: { case: "assign", value: { jobId: "j1", type: "build", payload: encodeJson({ tag: "v1" }, "p"), attempt: 2, timeoutMs: 30_000, deadlineUnixMs: 1.7e12 + 0.5 } } },
        { kind: { case: "cancel", value: { jobId: "j0", attempt: 1, reason: CancelReason.TIMEOUT, message: "late" } } },
        { kind: { case: "ping", value: { seq: 4_000_000_000 } } },
      ],
    });
    const bytes = session.requestSerialize(request);
    expect(Buffer.isBuffer(bytes)).toBe(true);
    const back = session.requestDeserialize(bytes) as SessionRequest;
    expect(back.messages.map((m) => m.kind.case)).toEqual(["assign", "cancel", "ping"]);
    const assign = back.messages[0]?.kind;
    expect(assign?.case === "assign" && decodeJson(assign.value.payload, "p")).toEqual({ tag: "v1" });
    expect(assign?.case === "assign" && assign.value.deadlineUnixMs).toBe(1.7e12 + 0.5);
    expect(back).toEqual(request);
  });

  it("round-trips worker messages, with a result that is an error or empty bytes", () => {
    const session = methodOf(workerServiceDefinition, "session");
    const response = create(SessionResponseSchema, {
      messages: [
        { kind: { case: "log", value: { jobId: "j", attempt: 1, line: "héllo ✓", stream: LogStream.STDERR } } },
        { kind: { case: "result", value: { jobId: "j", attempt: 1, outcome: { case: "value", value: new Uint8Array(0) } } } },
        { kind: { case: "result", value: { jobId: "k", attempt: 1, outcome: { case: "error", value: { code: "handler_failed", message: "no", retryable: true } } } } },
      ],
    });
    const back = session.responseDeserialize(session.responseSerialize(response)) as SessionResponse;
    expect(toBinary(SessionResponseSchema, back)).toEqual(toBinary(SessionResponseSchema, response));
    expect(back.messages[0]?.kind).toMatchObject({ case: "log", value: { line: "héllo ✓", stream: LogStream.STDERR } });
    expect(back.messages[2]?.kind).toMatchObject({ case: "result", value: { outcome: { case: "error", value: { code: "handler_failed", retryable: true } } } });
    const empty = back.messages[1]?.kind;
    expect(empty?.case === "result" && empty.value.outcome.case).toBe("value");
  });

  it("throws on bytes that are not a message, so grpc-js fails that call instead of crashing", () => {
    const session = methodOf(workerServiceDefinition, "session");
    expect(() => session.requestDeserialize(Buffer.from([0xff, 0xff, 0xff]))).toThrow();
    expect(toBinary(SessionRequestSchema, create(SessionRequestSchema)).byteLength).toBe(0);
  });
});

describe("JSON payload codec", () => {
  it("round-trips JSON values, and undefined as empty bytes", () => {
    for (const value of [null, 0, "é", [1, { a: true }], { nested: { x: 1.5 } }]) expect(decodeJson(encodeJson(value, "v"), "v")).toEqual(value);
    expect(encodeJson(undefined, "v").byteLength).toBe(0);
    expect(decodeJson(new Uint8Array(0), "v")).toBeUndefined();
  });

  it("refuses a value JSON cannot carry and bytes that are not JSON, with invalid_argument", () => {
    expect(() => encodeJson({ big: 10n }, "the handler's result")).toThrow(expect.objectContaining({ code: "invalid_argument", retryable: false }));
    expect(() => decodeJson(Buffer.from("{nope"), "Job.payload")).toThrow(/Job.payload is not valid JSON/);
  });
});

describe("enum mappings", () => {
  it("maps cancel reasons both ways; unspecified reads as requested", () => {
    for (const reason of ["requested", "timeout", "shutdown", "worker_lost"] as const) expect(cancelReasonFromWire(cancelReasonToWire(reason))).toBe(reason);
    expect(cancelReasonFromWire(CancelReason.UNSPECIFIED)).toBe("requested");
    expect(cancelReasonFromWire(42)).toBe("requested");
  });

  it("maps log streams both ways; unspecified is undefined", () => {
    expect(logStreamFromWire(logStreamToWire("stdout"))).toBe("stdout");
    expect(logStreamFromWire(logStreamToWire("stderr"))).toBe("stderr");
    expect(logStreamToWire(undefined)).toBe(LogStream.UNSPECIFIED);
    expect(logStreamFromWire(LogStream.UNSPECIFIED)).toBeUndefined();
  });
});

describe("Batcher", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("writes the messages pushed in one turn as one batch, in order, at setImmediate", () => {
    const writes: number[][] = [];
    const batcher = new Batcher<number>((m) => writes.push(m), { mode: "immediate", maxBytes: 1000, maxCount: 100 });
    batcher.push(1, 10);
    batcher.push(2, 10);
    batcher.push(3, 10);
    expect(writes).toEqual([]);
    vi.runAllTimers();
    expect(writes).toEqual([[1, 2, 3]]);
    batcher.push(4, 10);
    vi.runAllTimers();
    expect(writes).toEqual([[1, 2, 3], [4]]);
  });

  it("writes at once when the batch reaches maxCount or maxBytes, and sends a big message alone", () => {
    const writes: number[][] = [];
    const batcher = new Batcher<number>((m) => writes.push(m), { mode: "immediate", maxBytes: 100, maxCount: 2 });
    batcher.push(1, 10);
    batcher.push(2, 10);
    expect(writes).toEqual([[1, 2]]);
    batcher.push(3, 10);
    batcher.push(4, 95);
    expect(writes).toEqual([[1, 2], [3]]);
    vi.runAllTimers();
    expect(writes).toEqual([[1, 2], [3], [4]]);
    batcher.push(5, 150);
    expect(writes).toEqual([[1, 2], [3], [4], [5]]);
  });

  it("flushes at the end of the callback in microtask mode, and never batches in none mode", async () => {
    const writes: number[][] = [];
    const micro = new Batcher<number>((m) => writes.push(m), { mode: "microtask", maxBytes: 100, maxCount: 10 });
    micro.push(1, 1);
    micro.push(2, 1);
    await Promise.resolve();
    expect(writes).toEqual([[1, 2]]);
    const none = new Batcher<number>((m) => writes.push(m), { mode: "none", maxBytes: 100, maxCount: 10 });
    none.push(3, 1);
    none.push(4, 1);
    expect(writes).toEqual([[1, 2], [3], [4]]);
  });

  it("drops pending messages on close and ignores later pushes", () => {
    const writes: number[][] = [];
    const batcher = new Batcher<number>((m) => writes.push(m), { mode: "immediate", maxBytes: 100, maxCount: 10 });
    batcher.push(1, 1);
    batcher.close();
    batcher.push(2, 1);
    vi.runAllTimers();
    batcher.flush();
    expect(writes).toEqual([]);
  });
});
