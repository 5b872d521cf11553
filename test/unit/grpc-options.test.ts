import { describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { GrpcTransportOptions } from "../../src/transport/grpc/index.ts";
import type { ExecuteRequest } from "../../src/transport/types.ts";
import { serveWorker } from "../../src/worker/index.ts";
import type { ServeWorkerOptions } from "../../src/worker/index.ts";

const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

function invalid(fn: () => unknown, field: string): void {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field } });
    return;
  }
  throw new Error(`expected invalid_argument for ${field}`);
}

describe("GrpcTransport options", () => {
  it.each([
    [{}, "address"],
    [{ address: "" }, "address"],
    [{ address: "w:1", maxMessageBytes: 1024 }, "maxMessageBytes"],
    [{ address: "w:1", pingTimeoutMs: 0 }, "pingTimeoutMs"],
    [{ address: "w:1", reconnect: { baseDelayMs: 500, maxDelayMs: 100 } }, "reconnect.maxDelayMs"],
    [{ address: "w:1", reconnect: { jitter: 2 } }, "reconnect.jitter"],
    [{ address: "w:1", tls: { ca: "" } }, "tls.ca"],
    [{ address: "w:1", tls: { ca: pem, cert: pem } }, "tls.key"],
    [{ address: "w:1", token: 42 }, "token"],
    [{ address: "w:1", flushMode: "sometimes" }, "flushMode"],
  ])("refuses %j naming %s, without connecting", (options, field) => {
    invalid(() => new GrpcTransport(options as unknown as GrpcTransportOptions), field);
  });

  it("closes through Symbol.asyncDispose, so await using works, after which execute rejects worker_lost", async () => {
    const transport = new GrpcTransport({ address: "127.0.0.1:1" });
    await transport[Symbol.asyncDispose]();
    const request: ExecuteRequest = { jobId: "j", type: "t", payload: null, attempt: 1, deadline: Date.now() + 1000 };
    await expect(transport.execute(request, { signal: new AbortController().signal, onEvent: () => {} })).rejects.toMatchObject({ code: "worker_lost" });
  });

  it("accepts TLS material as strings or Buffers", () => {
    expect(() => new GrpcTransport({ address: "w:1", tls: { ca: Buffer.from(pem), serverName: "worker.internal" } })).not.toThrow();
  });
});

describe("GrpcTransport.execute input", () => {
  const transport = new GrpcTransport({ address: "127.0.0.1:1", maxMessageBytes: 64 * 1024 });
  const request = (extra: Partial<ExecuteRequest> = {}): ExecuteRequest => ({ jobId: "j", type: "t", payload: null, attempt: 1, deadline: Date.now() + 10_000, ...extra });
  const options = { signal: new AbortController().signal, onEvent: () => {} };

  it("rejects bad requests and options with invalid_argument before anything is sent", async () => {
    await expect(transport.execute(request({ jobId: "" }), options)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "request.jobId" } });
    await expect(transport.execute(request({ attempt: 0 }), options)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "request.attempt" } });
    await expect(transport.execute(request(), { onEvent: () => {} } as never)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "options.signal" } });
    await expect(transport.execute(request(), { signal: options.signal } as never)).rejects.toMatchObject({ code: "invalid_argument", details: { field: "options.onEvent" } });
    await expect(transport.execute(request({ payload: { n: 1n } }), options)).rejects.toMatchObject({ code: "invalid_argument", retryable: false });
  });

  it("refuses a payload over maxMessageBytes, since it would break the whole session", async () => {
    await expect(transport.execute(request({ payload: "x".repeat(70 * 1024) }), options)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "payload" },
    });
  });

  it("rejects a request past its deadline with deadline_exceeded, and an aborted signal with its reason", async () => {
    await expect(transport.execute(request({ deadline: Date.now() - 1 }), options)).rejects.toMatchObject({ code: "deadline_exceeded" });
    const reason = new OrchestratorError("canceled", "stop", { details: { reason: "requested" } });
    await expect(transport.execute(request(), { signal: AbortSignal.abort(reason), onEvent: () => {} })).rejects.toBe(reason);
  });

  it("rejects everything with worker_lost once closed, and close is idempotent", async () => {
    const closed = new GrpcTransport({ address: "127.0.0.1:1" });
    await closed.close();
    await closed.close();
    await expect(closed.execute(request(), options)).rejects.toMatchObject({ code: "worker_lost" });
    await expect(closed.check({ timeoutMs: 100 })).rejects.toMatchObject({ code: "unavailable" });
  });
});

describe("serveWorker options", () => {
  const handlers = { echo: (p: unknown) => p };
  it.each([
    [{}, "handlers"],
    [{ handlers: {} }, "handlers"],
    [{ handlers: { echo: "not a function" } }, "handlers.echo"],
    [{ handlers, slots: 0 }, "slots"],
    [{ handlers, port: 70_000 }, "port"],
    [{ handlers, labels: { zone: 1 } }, "labels.zone"],
    [{ handlers, gracePeriodMs: -1 }, "gracePeriodMs"],
    [{ handlers, auth: { token: "" } }, "auth.token"],
    [{ handlers, tls: { cert: pem, key: pem, requireClientCert: true } }, "tls.ca"],
    [{ handlers, tls: { cert: pem } }, "tls.key"],
    [{ handlers, handleSignals: "yes" }, "handleSignals"],
  ])("refuses %j naming %s, before it listens", async (options, field) => {
    await expect(serveWorker(options as unknown as ServeWorkerOptions)).rejects.toMatchObject({ code: "invalid_argument", details: { field } });
  });
});
