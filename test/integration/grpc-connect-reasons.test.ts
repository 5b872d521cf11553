import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { GrpcTransportOptions } from "../../src/transport/grpc/index.ts";
import { WORKER_PROTOCOL } from "../../src/wire/protocol.ts";
import { serveWorker } from "../../src/worker/index.ts";
import type { WorkerServer } from "../../src/worker/index.ts";
import { ensureTestCerts } from "../helpers/certs.ts";
import type { TestCerts } from "../helpers/certs.ts";

async function connectError(options: GrpcTransportOptions): Promise<{ code: string; message: string; details: Record<string, unknown> }> {
  const transport = new GrpcTransport({ connectTimeoutMs: 3000, ...options });
  try {
    await transport.connect();
  } catch (error) {
    return error as { code: string; message: string; details: Record<string, unknown> };
  } finally {
    await transport.close();
  }
  throw new Error("connect() succeeded");
}

describe("GrpcTransport.connect", () => {
  let certs: TestCerts;
  let tlsWorker: WorkerServer;
  let plainWorker: WorkerServer;

  beforeAll(async () => {
    certs = await ensureTestCerts();
    tlsWorker = await serveWorker({
      id: "tls-worker",
      handlers: contractHandlers,
      host: "127.0.0.1",
      handleSignals: false,
      tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert },
    });
    plainWorker = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", handleSignals: false, slots: 3, labels: { zone: "eu" }, auth: { token: "s3cret" } });
  });
  afterAll(async () => {
    await tlsWorker?.close();
    await plainWorker?.close();
  });

  it("resolves with what the worker announced on its session: id, slots, labels, job types, version and protocol", async () => {
    const transport = new GrpcTransport({ address: plainWorker.address, token: "s3cret" });
    try {
      const description = await transport.connect();
      expect(description).toEqual({
        workerId: plainWorker.id,
        slots: 3,
        labels: { zone: "eu" },
        jobTypes: Object.keys(contractHandlers),
        version: plainWorker.description.version,
        protocol: WORKER_PROTOCOL,
      });
      expect(plainWorker.id).toMatch(new RegExp(`:${plainWorker.port}$`));
      expect(await transport.describe()).toEqual(description);
    } finally {
      await transport.close();
    }
    const tls = new GrpcTransport({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey } });
    try {
      expect((await tls.connect()).workerId).toBe("tls-worker");
    } finally {
      await tls.close();
    }
  });

  it.each<[string, () => GrpcTransportOptions, string, RegExp]>([
    ["nothing listens", () => ({ address: "127.0.0.1:1" }), "refused", /connection refused/],
    ["a client certificate from another CA", () => ({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.caCert, cert: certs.otherCaClientCert, key: certs.otherCaClientKey } }), "client_cert_rejected", /another CA .*unknown CA/],
    ["an expired client certificate", () => ({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.caCert, cert: certs.expiredClientCert, key: certs.expiredClientKey } }), "client_cert_rejected", /expired on 2020-01-02/],
    ["no client certificate", () => ({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.caCert } }), "client_cert_required", /requires a client certificate/],
    ["a worker certificate from an unknown CA", () => ({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.otherCaCert, cert: certs.clientCert, key: certs.clientKey } }), "unknown_ca", /unknown CA/],
    ["a worker certificate for another name", () => ({ address: `localhost:${tlsWorker.port}`, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey, serverName: "elsewhere.example" } }), "name_mismatch", /not valid for the name elsewhere\.example/],
    ["plaintext to a TLS port", () => ({ address: `127.0.0.1:${tlsWorker.port}` }), "plaintext_to_tls", /speaks TLS but this orchestrator connects in plaintext/],
    ["TLS to a plaintext port", () => ({ address: plainWorker.address, tls: { ca: certs.caCert } }), "tls_to_plaintext", /speaks plaintext/],
    ["a wrong token", () => ({ address: plainWorker.address, token: "wrong" }), "unauthenticated", /refused this orchestrator's credentials/],
  ])("says why no session opens: %s", async (_name, options, failure, reason) => {
    const error = await connectError(options());
    expect(error.details).toMatchObject({ connectFailure: failure, started: false });
    expect(error.message).toMatch(reason);
    // Never grpc-js's reasonless wording alone.
    expect(error.message).not.toMatch(/^\[\w+\] [^:]*Failed to connect/);
  });
});
