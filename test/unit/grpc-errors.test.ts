import { Metadata, status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { nonRetryable, OrchestratorError } from "../../src/errors.ts";
import type { OrchestratorErrorCode } from "../../src/errors.ts";
import { cancelError } from "../../src/signals.ts";
import { codeFromGrpcStatus, fromGrpcError, fromWireError, isEnhanceYourCalm, isSdkWorkerVersion, toGrpcStatus, toWireError } from "../../src/wire/errors.ts";

describe("gRPC error mapping", () => {
  it.each([
    [status.CANCELLED, "canceled"],
    [status.UNKNOWN, "internal"],
    [status.INVALID_ARGUMENT, "invalid_argument"],
    [status.DEADLINE_EXCEEDED, "deadline_exceeded"],
    [status.NOT_FOUND, "not_found"],
    [status.ALREADY_EXISTS, "precondition_failed"],
    [status.PERMISSION_DENIED, "permission_denied"],
    [status.RESOURCE_EXHAUSTED, "resource_exhausted"],
    [status.FAILED_PRECONDITION, "precondition_failed"],
    [status.ABORTED, "unavailable"],
    [status.OUT_OF_RANGE, "invalid_argument"],
    [status.UNIMPLEMENTED, "not_found"],
    [status.INTERNAL, "internal"],
    [status.UNAVAILABLE, "unavailable"],
    [status.DATA_LOSS, "internal"],
    [status.UNAUTHENTICATED, "unauthenticated"],
  ] as Array<[number, OrchestratorErrorCode]>)("maps grpc status %i to %s", (code, expected) => {
    expect(codeFromGrpcStatus(code)).toBe(expected);
    const error = fromGrpcError(Object.assign(new Error(`${code} boom`), { code, details: "boom", metadata: new Metadata() }));
    expect(error.code).toBe(expected);
    expect(error.rawMessage).toBe("boom");
    expect(error.details.grpcStatus).toBe(code);
  });

  it("keeps the original error as cause and prefixes the context", () => {
    const original = Object.assign(new Error("14 UNAVAILABLE: No connection established"), { code: status.UNAVAILABLE, details: "No connection established" });
    const error = fromGrpcError(original, "health check of w1:50051");
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error.cause).toBe(original);
    expect(error.message).toBe("[unavailable] health check of w1:50051: No connection established");
    expect(error.retryable).toBe(true);
  });

  it("reads the exact code a worker put in the blacktree-error-code trailer", () => {
    const status_ = toGrpcStatus(new OrchestratorError("worker_lost", "worker shutting down"));
    expect(status_.code).toBe(status.UNAVAILABLE);
    const error = fromGrpcError(Object.assign(new Error("x"), status_));
    expect(error.code).toBe("worker_lost");
    expect(error.rawMessage).toBe("worker shutting down");
  });

  it("ignores a trailer that is not one of our codes", () => {
    const metadata = new Metadata();
    metadata.set("blacktree-error-code", "made_up");
    expect(fromGrpcError({ code: status.RESOURCE_EXHAUSTED, details: "full", metadata }).code).toBe("resource_exhausted");
  });

  it("maps a connect-es ConnectError by its numeric code", () => {
    const connectError = Object.assign(new Error("[unauthenticated] bad token"), { name: "ConnectError", code: 16, rawMessage: "bad token" });
    const error = fromGrpcError(connectError);
    expect(error.code).toBe("unauthenticated");
    expect(error.rawMessage).toBe("bad token");
  });

  it("maps socket errors to unavailable and aborts to canceled, anything else to internal", () => {
    expect(fromGrpcError(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" })).code).toBe("unavailable");
    expect(fromGrpcError(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })).details.errno).toBe("ECONNRESET");
    expect(fromGrpcError(new DOMException("This operation was aborted", "AbortError")).code).toBe("canceled");
    expect(fromGrpcError(new DOMException("timed out", "TimeoutError")).code).toBe("deadline_exceeded");
    expect(fromGrpcError(new TypeError("x is not a function")).code).toBe("internal");
    expect(fromGrpcError("a string").code).toBe("internal");
    expect(fromGrpcError({ code: 99, details: "out of range status" }).code).toBe("internal");
  });

  it("tells grpc-js's status for a connection closed with ENHANCE_YOUR_CALM from a worker's own resource_exhausted", () => {
    const calm = (details: string, code: number = status.RESOURCE_EXHAUSTED) => Object.assign(new Error(`${code} ${details}`), { code, details, metadata: new Metadata() });
    expect(isEnhanceYourCalm(calm("Bandwidth exhausted or memory limit exceeded"))).toBe(true);
    expect(isEnhanceYourCalm(calm("no free slot"))).toBe(false);
    expect(isEnhanceYourCalm(calm("Bandwidth exhausted or memory limit exceeded", status.UNAVAILABLE))).toBe(false);
    expect(isEnhanceYourCalm(new Error("Bandwidth exhausted or memory limit exceeded"))).toBe(false);
  });

  it("returns an OrchestratorError unchanged", () => {
    const error = new OrchestratorError("not_found", "no such job");
    expect(fromGrpcError(error)).toBe(error);
  });

  it("gives every OrchestratorError code a grpc status with the code in the trailer", () => {
    for (const code of ["handler_failed", "queue_closed", "already_settled", "unknown_outcome", "invalid_argument"] as const) {
      const status_ = toGrpcStatus(new OrchestratorError(code, "m"));
      expect(status_.metadata.get("blacktree-error-code")).toEqual([code]);
      expect(fromGrpcError(status_).code).toBe(code);
    }
  });
});

describe("protocol Error messages", () => {
  it("round-trips code, message, retryable and details", () => {
    for (const original of [
      nonRetryable("payload.image is required"),
      new OrchestratorError("handler_failed", "disk full", { retryable: true }),
      cancelError("timeout", "too slow"),
      new OrchestratorError("worker_lost", "gone", { details: { reason: "worker_lost", workerReason: "shutdown" } }),
    ]) {
      const back = fromWireError(toWireError(original));
      expect(back.toJSON()).toEqual(original.toJSON());
    }
  });

  it("reads an unknown code as internal, keeping the worker's code as details.wireCode, and drops details that are not a JSON object", () => {
    const error = fromWireError({ code: "teapot", message: "short and stout", retryable: false, detailsJson: "[1,2" } as never);
    expect(error.code).toBe("internal");
    expect(error.rawMessage).toBe("short and stout");
    expect(error.details).toEqual({ wireCode: "teapot" });
    expect(fromWireError({ code: "canceled", message: "", retryable: false, detailsJson: "[1]" } as never).details).toEqual({});
  });

  it("sends no details when they cannot be serialised", () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(toWireError(new OrchestratorError("internal", "x", { details: circular })).detailsJson).toBe("");
  });

  describe("retries: a failure is retryable unless the worker says otherwise", () => {
    const base = { code: "handler_failed", message: "m", detailsJson: "" };
    it("retries a failure from a worker that set neither flag (proto3 bools default to false)", () => {
      expect(fromWireError({ ...base, retryable: false } as never).retryable).toBe(true);
    });
    it("does not retry when non_retryable is set, whatever retryable says", () => {
      expect(fromWireError({ ...base, retryable: true, nonRetryable: true } as never).retryable).toBe(false);
      expect(fromWireError({ ...base, retryable: false, nonRetryable: false } as never).retryable).toBe(true);
    });
    it("reads retryable alone from a worker of this SDK older than non_retryable", () => {
      expect(fromWireError({ ...base, retryable: false } as never, true).retryable).toBe(false);
      expect(fromWireError({ ...base, retryable: true } as never, true).retryable).toBe(true);
      expect(isSdkWorkerVersion("@blacktree/orchestrator 0.1.0")).toBe(true);
      expect(isSdkWorkerVersion("my-python-worker 1.2")).toBe(false);
    });
    it("sends both flags, so old and new orchestrators read the same", () => {
      expect(toWireError(new OrchestratorError("handler_failed", "x", { retryable: false }))).toMatchObject({ retryable: false, nonRetryable: true });
      expect(toWireError(new OrchestratorError("handler_failed", "x", { retryable: true }))).toMatchObject({ retryable: true, nonRetryable: false });
    });
  });
});
