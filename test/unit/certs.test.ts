import { execFile } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer } from "node:tls";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestCerts, genCertsScript, type TestCerts } from "../helpers/certs.ts";

let certs: TestCerts;
beforeAll(async () => {
  certs = await ensureTestCerts();
});

describe("scripts/gen-certs.sh", () => {
  it("issues a server cert from the CA for localhost and 127.0.0.1, with its matching key", () => {
    const ca = new X509Certificate(certs.caCert);
    const server = new X509Certificate(certs.serverCert);
    expect(ca.ca).toBe(true);
    expect(server.ca).toBe(false);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.checkHost("localhost")).toBe("localhost");
    expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(server.checkHost("example.com")).toBeUndefined();
    expect(server.checkPrivateKey(createPrivateKey(certs.serverKey))).toBe(true);
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(new Date(server.validTo).getTime()).toBeGreaterThan(Date.now() + 86_400_000);
  });

  it("issues a valid client cert from the CA", () => {
    const ca = new X509Certificate(certs.caCert);
    const client = new X509Certificate(certs.clientCert);
    expect(client.verify(ca.publicKey)).toBe(true);
    expect(client.checkPrivateKey(createPrivateKey(certs.clientKey))).toBe(true);
    expect(new Date(client.validFrom).getTime()).toBeLessThanOrEqual(Date.now());
    expect(new Date(client.validTo).getTime()).toBeGreaterThan(Date.now());
  });

  it("issues the other-CA client cert from a CA that is not the test CA", () => {
    const ca = new X509Certificate(certs.caCert);
    const other = new X509Certificate(certs.otherCaClientCert);
    expect(other.checkIssued(ca)).toBe(false);
    expect(other.verify(ca.publicKey)).toBe(false);
    expect(other.checkPrivateKey(createPrivateKey(certs.otherCaClientKey))).toBe(true);
  });

  it("issues an expired client cert signed by the CA", () => {
    const ca = new X509Certificate(certs.caCert);
    const expired = new X509Certificate(certs.expiredClientCert);
    expect(expired.verify(ca.publicKey)).toBe(true);
    expect(new Date(expired.validTo).getTime()).toBeLessThan(Date.now());
    expect(expired.checkPrivateKey(createPrivateKey(certs.expiredClientKey))).toBe(true);
  });

  it("returns the same certs on every call within a process", async () => {
    expect(await ensureTestCerts()).toBe(certs);
  });

  it("leaves an existing valid set untouched when run again", async () => {
    const dir = await mkdtemp(join(tmpdir(), "blacktree-certs-test-"));
    try {
      await promisify(execFile)("bash", [genCertsScript, dir]);
      const before = await readFile(join(dir, "server.pem"));
      const mtime = (await stat(join(dir, "ca.pem"))).mtimeMs;
      await promisify(execFile)("bash", [genCertsScript, dir]);
      expect(await readFile(join(dir, "server.pem"))).toEqual(before);
      expect((await stat(join(dir, "ca.pem"))).mtimeMs).toBe(mtime);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the certs in a real mTLS handshake", () => {
  let server: ReturnType<typeof createServer>;
  let port: number;

  beforeAll(async () => {
    // The server lets every client finish the handshake and answers with its verdict, so a
    // test sees why a cert was refused rather than a bare reset.
    server = createServer({ cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert, requestCert: true, rejectUnauthorized: false });
    server.on("secureConnection", (socket) => socket.end(socket.authorized ? "authorized" : String(socket.authorizationError)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Connects with the given client cert and resolves with the server's verdict on it. */
  function verdict(cert: Buffer, key: Buffer, servername = "localhost"): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port, servername, ca: certs.caCert, cert, key });
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
  }

  it("authorizes the CA's client cert and verifies the server as localhost", async () => {
    await expect(verdict(certs.clientCert, certs.clientKey)).resolves.toBe("authorized");
  });

  it("refuses the client cert from the other CA as unknown", async () => {
    await expect(verdict(certs.otherCaClientCert, certs.otherCaClientKey)).resolves.toBe("UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  });

  it("refuses the expired client cert as expired", async () => {
    await expect(verdict(certs.expiredClientCert, certs.expiredClientKey)).resolves.toBe("CERT_HAS_EXPIRED");
  });

  it("fails server verification for a name the server cert does not carry", async () => {
    await expect(verdict(certs.clientCert, certs.clientKey, "worker.example.com")).rejects.toThrow(/altnames/i);
  });
});
