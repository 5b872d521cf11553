import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contractHandlers } from "../../src/testing/contract-handlers.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { GrpcTransportOptions } from "../../src/transport/grpc/index.ts";
import { serveWorker } from "../../src/worker/index.ts";
import type { WorkerServer } from "../../src/worker/index.ts";
import { ensureTestCerts } from "../helpers/certs.ts";
import type { TestCerts } from "../helpers/certs.ts";

const echo = (transport: GrpcTransport) =>
  transport.execute({ jobId: randomUUID(), type: "echo", payload: "hi", attempt: 1, deadline: Date.now() + 5000 }, { signal: new AbortController().signal, onEvent: () => {} });

async function withTransport<T>(options: GrpcTransportOptions, use: (transport: GrpcTransport) => Promise<T>): Promise<T> {
  const transport = new GrpcTransport({ connectTimeoutMs: 3000, ...options });
  try {
    return await use(transport);
  } finally {
    await transport.close();
  }
}

describe("serveWorker with mutual TLS", () => {
  let certs: TestCerts;
  let worker: WorkerServer;
  let address: string;

  beforeAll(async () => {
    certs = await ensureTestCerts();
    // requireClientCert is not given: with a CA it defaults to on (grpc-js's own default is off).
    worker = await serveWorker({
      handlers: contractHandlers,
      host: "127.0.0.1",
      handleSignals: false,
      tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert },
    });
    address = `localhost:${worker.port}`;
  });
  afterAll(() => worker?.close());

  it("runs jobs for a client whose certificate the CA signed", async () => {
    await withTransport({ address, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey } }, async (transport) => {
      expect(await transport.check({ timeoutMs: 3000 })).toBe("serving");
      expect(await echo(transport)).toBe("hi");
    });
  });

  it.each([
    ["no client certificate", () => ({})],
    ["a certificate from another CA", () => ({ cert: certs.otherCaClientCert, key: certs.otherCaClientKey })],
    ["an expired certificate", () => ({ cert: certs.expiredClientCert, key: certs.expiredClientKey })],
  ])("refuses a client with %s", async (_name, client) => {
    await withTransport({ address, tls: { ca: certs.caCert, ...client() } }, async (transport) => {
      await expect(transport.check({ timeoutMs: 3000 })).rejects.toMatchObject({ code: "unavailable" });
      await expect(echo(transport)).rejects.toMatchObject({ code: "unavailable" });
    });
  });

  it("lets the orchestrator refuse a worker whose certificate another CA signed or names another host", async () => {
    const client = { cert: certs.clientCert, key: certs.clientKey };
    const otherCa = await readFile(`${certs.dir}/other-ca.pem`);
    await withTransport({ address, tls: { ca: otherCa, ...client } }, async (transport) => {
      await expect(transport.check({ timeoutMs: 3000 })).rejects.toMatchObject({ code: "unavailable" });
    });
    await withTransport({ address, tls: { ca: certs.caCert, serverName: "worker.elsewhere.example", ...client } }, async (transport) => {
      await expect(transport.check({ timeoutMs: 3000 })).rejects.toMatchObject({ code: "unavailable" });
    });
  });
});

describe("serveWorker with a bearer token", () => {
  let worker: WorkerServer;

  beforeAll(async () => {
    worker = await serveWorker({ handlers: contractHandlers, host: "127.0.0.1", handleSignals: false, auth: { token: "s3cret" } });
  });
  afterAll(() => worker?.close());

  it("refuses jobs and describe without the right token, runs them with it, and keeps Health open for probes", async () => {
    for (const token of [undefined, "wrong"]) {
      await withTransport({ address: worker.address, ...(token ? { token } : {}) }, async (transport) => {
        // Retryable: the worker refused, not the job, so a dispatcher runs it on another worker
        // instead of dead-lettering it (this worker's health check still answers serving).
        await expect(echo(transport)).rejects.toMatchObject({ code: "unauthenticated", retryable: true });
        await expect(transport.describe({ timeoutMs: 3000 })).rejects.toMatchObject({ code: "unauthenticated" });
        expect(await transport.check({ timeoutMs: 3000 })).toBe("serving");
      });
    }
    await withTransport({ address: worker.address, token: "s3cret" }, async (transport) => {
      expect(await echo(transport)).toBe("hi");
    });
  });
});
