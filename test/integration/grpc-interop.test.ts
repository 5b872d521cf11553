import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, Health } from "../../src/gen/grpc/health/v1/health_pb.ts";
import { WorkerService } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { WorkerJobEvent } from "../../src/job/types.ts";
import { serveWorker } from "../../src/worker/index.ts";
import type { WorkerServer } from "../../src/worker/index.ts";

// Interop is proven with clients and servers that share nothing with our code but the .proto files.
const protoDir = fileURLToPath(new URL("../../proto", import.meta.url));
const definition = protoLoader.loadSync(["blacktree/orchestrator/v1/worker.proto", "grpc/health/v1/health.proto"], {
  includeDirs: [protoDir],
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const loaded = grpc.loadPackageDefinition(definition) as any;
const WorkerServiceClient = loaded.blacktree.orchestrator.v1.WorkerService as grpc.ServiceClientConstructor;
const HealthClient = loaded.grpc.health.v1.Health as grpc.ServiceClientConstructor;

/* eslint-disable @typescript-eslint/no-explicit-any -- proto-loader clients are untyped */
type Untyped = grpc.Client & Record<string, any>;

function collect(stream: grpc.ClientReadableStream<any>): Promise<{ messages: any[]; error?: grpc.ServiceError }> {
  const messages: any[] = [];
  return new Promise((resolve) => {
    stream.on("data", (message) => messages.push(message));
    stream.on("error", (error: grpc.ServiceError) => resolve({ messages, error }));
    stream.on("end", () => resolve({ messages }));
  });
}

function unary<T>(client: Untyped, method: string, request: unknown): Promise<T> {
  return new Promise((resolve, reject) => client[method](request, (error: Error | null, response: T) => (error ? reject(error) : resolve(response))));
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

describe("a plain @grpc/grpc-js client (proto-loader) against serveWorker", () => {
  let worker: WorkerServer;
  let jobs: Untyped;
  let health: Untyped;

  beforeAll(async () => {
    worker = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", slots: 2, labels: { zone: "a" }, handleSignals: false });
    jobs = new WorkerServiceClient(worker.address, grpc.credentials.createInsecure()) as Untyped;
    health = new HealthClient(worker.address, grpc.credentials.createInsecure()) as Untyped;
  });
  afterAll(async () => {
    jobs?.close();
    health?.close();
    await worker?.close();
  });

  it("runs a job with Execute and streams its progress and log lines, then one Result", async () => {
    const jobId = randomUUID();
    const { messages, error } = await collect(jobs.execute({ job: { jobId, type: "progress", payload: json({ steps: 2 }), attempt: 1, timeoutMs: 5000 } }));
    expect(error).toBeUndefined();
    expect(messages.map((m) => m.kind)).toEqual(["progress", "log", "progress", "log", "progress", "progress", "result"]);
    expect(messages[1].log).toMatchObject({ jobId, attempt: 1, line: "step 1", stream: "LOG_STREAM_STDOUT" });
    const result = messages.at(-1).result;
    expect(result.outcome).toBe("value");
    expect(JSON.parse(result.value.toString())).toEqual({ steps: 2 });
  });

  it("cancels a running Execute with the Cancel RPC; the job's Result says canceled", async () => {
    const jobId = randomUUID();
    const stream = jobs.execute({ job: { jobId, type: "waitForAbort", payload: json({}), attempt: 1, timeoutMs: 5000 } });
    const done = collect(stream);
    await new Promise((resolve) => stream.once("data", resolve));
    expect(await unary(jobs, "cancel", { jobId, attempt: 1, reason: "CANCEL_REASON_REQUESTED" })).toEqual({ found: true });
    const result = (await done).messages.at(-1).result;
    expect(result.outcome).toBe("error");
    expect(result.error).toMatchObject({ code: "canceled", retryable: false });
    expect(await unary(jobs, "cancel", { jobId, attempt: 1 })).toEqual({ found: false });
  });

  it("describes the worker", async () => {
    const response = await unary<any>(jobs, "describe", {});
    expect(response.worker).toMatchObject({ slots: 2, labels: { zone: "a" } });
    expect([...response.worker.jobTypes].sort()).toEqual(Object.keys(contractHandlers).sort());
  });

  it("answers a malformed request with an error status and keeps serving", async () => {
    const garbage = new grpc.Client(worker.address, grpc.credentials.createInsecure());
    try {
      const error = await new Promise<grpc.ServiceError | null>((resolve) =>
        garbage.makeUnaryRequest("/blacktree.orchestrator.v1.WorkerService/Describe", (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0xff, 0xff, 0xff]), (e) => resolve(e)),
      );
      expect(error?.code).toBe(grpc.status.INTERNAL);
      const { messages } = await collect(jobs.execute({ job: { jobId: "", type: "echo", payload: json(1), attempt: 1 } }));
      expect(messages.at(-1).result.error).toMatchObject({ code: "invalid_argument" });
    } finally {
      garbage.close();
    }
    expect((await unary<any>(health, "check", { service: "" })).status).toBe("SERVING");
  });

  it("answers Health Check as the standard says: SERVING for the server and the job service, NOT_FOUND for an unknown service", async () => {
    expect(await unary(health, "check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await unary(health, "check", { service: "blacktree.orchestrator.v1.WorkerService" })).toEqual({ status: "SERVING" });
    await expect(unary(health, "check", { service: "no.such.Service" })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("streams Health Watch: the status at once, SERVICE_UNKNOWN without ending for an unknown service, NOT_SERVING when draining", async () => {
    const own = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", handleSignals: false, gracePeriodMs: 5000 });
    const client = new HealthClient(own.address, grpc.credentials.createInsecure()) as Untyped;
    try {
      const known: string[] = [];
      const unknown: string[] = [];
      const watch = client.watch({ service: "" });
      watch.on("data", (m: { status: string }) => known.push(m.status));
      watch.on("error", () => {});
      const other = client.watch({ service: "no.such.Service" });
      other.on("data", (m: { status: string }) => unknown.push(m.status));
      other.on("error", () => {});
      await expect.poll(() => known).toEqual(["SERVING"]);
      await expect.poll(() => unknown).toEqual(["SERVICE_UNKNOWN"]);
      // A running job keeps the worker draining long enough to watch the change.
      const transport = new GrpcTransport({ address: own.address });
      const job = transport.execute(
        { jobId: randomUUID(), type: "sleep", payload: { ms: 300 }, attempt: 1, deadline: Date.now() + 5000 },
        { signal: new AbortController().signal, onEvent: () => {} },
      );
      await expect.poll(() => own.running).toBe(1);
      const closed = own.close();
      await expect.poll(() => known).toEqual(["SERVING", "NOT_SERVING"]);
      expect(await job).toEqual({ slept: 300 });
      await closed;
      await transport.close();
      expect(unknown).toEqual(["SERVICE_UNKNOWN"]);
      watch.cancel();
      other.cancel();
    } finally {
      client.close();
      await own.close();
    }
  });
});

describe("a connect-node client against serveWorker", () => {
  it("calls Health Check and runs a job with Execute over gRPC", async () => {
    await using worker = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", handleSignals: false });
    const transport = createGrpcTransport({ baseUrl: `http://${worker.address}` });
    const health = createClient(Health, transport);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const jobs = createClient(WorkerService, transport);
    const kinds: string[] = [];
    let value: unknown;
    for await (const response of jobs.execute({ job: { jobId: randomUUID(), type: "echo", payload: json({ hi: 1 }), attempt: 1, timeoutMs: 5000 } })) {
      kinds.push(response.kind.case ?? "");
      if (response.kind.case === "result" && response.kind.value.outcome.case === "value") value = JSON.parse(Buffer.from(response.kind.value.outcome.value).toString());
    }
    expect(kinds).toEqual(["result"]);
    expect(value).toEqual({ hi: 1 });
  });
});

describe("GrpcTransport against a worker written directly on @grpc/grpc-js", () => {
  let server: grpc.Server;
  let address: string;
  const cancels: unknown[] = [];

  beforeAll(async () => {
    server = new grpc.Server();
    const service = loaded.blacktree.orchestrator.v1.WorkerService.service as grpc.ServiceDefinition;
    server.addService(service, {
      session(call: grpc.ServerDuplexStream<any, any>) {
        call.write({ messages: [{ hello: { worker: { slots: 8, labels: { impl: "hand-written" }, jobTypes: ["double"], version: "hw-1" } } }] });
        call.on("data", (request: { messages: any[] }) => {
          for (const message of request.messages) {
            if (message.ping) call.write({ messages: [{ pong: { seq: message.ping.seq } }] });
            if (message.cancel) cancels.push(message.cancel);
            if (message.assign) {
              const { jobId, attempt, payload } = message.assign;
              const n = JSON.parse(payload.toString()) as number;
              // A stale result for an earlier attempt first: the transport must ignore it.
              call.write({
                messages: [
                  { result: { jobId, attempt: attempt - 1, value: json("stale") } },
                  { progress: { jobId, attempt, progress: 0.5, message: "halfway" } },
                  { log: { jobId, attempt, line: "doubling", stream: "LOG_STREAM_STDERR" } },
                ],
              });
              if (n < 0) continue; // never answers: the caller cancels
              call.write({ messages: [{ result: { jobId, attempt, value: json(n * 2) } }] });
            }
          }
        });
        call.on("end", () => call.end());
      },
      execute(call: grpc.ServerWritableStream<any, any>) {
        call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "sessions only" });
      },
      cancel(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
        callback(null, { found: false });
      },
      describe(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
        callback(null, { worker: { slots: 8, labels: { impl: "hand-written" }, jobTypes: ["double"], version: "hw-1" } });
      },
    });
    server.addService(loaded.grpc.health.v1.Health.service as grpc.ServiceDefinition, {
      check(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
        callback(null, { status: "SERVING" });
      },
      watch(call: grpc.ServerWritableStream<any, any>) {
        call.write({ status: "SERVING" });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server?.forceShutdown());

  it("runs jobs, delivers events in order, ignores a result for another attempt, checks health and describes", async () => {
    const transport = new GrpcTransport({ address });
    try {
      const events: WorkerJobEvent[] = [];
      const value = await transport.execute(
        { jobId: randomUUID(), type: "double", payload: 21, attempt: 2, deadline: Date.now() + 5000 },
        { signal: new AbortController().signal, onEvent: (event) => events.push(event) },
      );
      expect(value).toBe(42);
      expect(events).toEqual([
        { kind: "progress", progress: 0.5, message: "halfway" },
        { kind: "log", line: "doubling", stream: "stderr" },
      ]);
      expect(transport.worker).toEqual({ slots: 8, labels: { impl: "hand-written" }, jobTypes: ["double"], version: "hw-1" });
      expect(await transport.check({ timeoutMs: 2000 })).toBe("serving");
      expect((await transport.describe({ timeoutMs: 2000 })).version).toBe("hw-1");

      const controller = new AbortController();
      const jobId = randomUUID();
      const pending = transport.execute({ jobId, type: "double", payload: -1, attempt: 1, deadline: Date.now() + 5000 }, { signal: controller.signal, onEvent: () => controller.abort() });
      await expect(pending).rejects.toMatchObject({ code: "canceled" });
      await expect.poll(() => cancels).toContainEqual(expect.objectContaining({ jobId, attempt: 1, reason: "CANCEL_REASON_REQUESTED" }));
    } finally {
      await transport.close();
    }
  });
});
