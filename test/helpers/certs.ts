import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** The TLS material of `scripts/gen-certs.sh`, PEM-encoded, ready for `tls` / grpc-js options. */
export interface TestCerts {
  /** The test CA that signed the server, client and expired certs. */
  caCert: Buffer;
  /** Worker server cert: SAN DNS:localhost, IP:127.0.0.1, IP:::1. */
  serverCert: Buffer;
  serverKey: Buffer;
  /** Orchestrator client cert signed by the CA. */
  clientCert: Buffer;
  clientKey: Buffer;
  /** The unrelated CA: an orchestrator trusting only it must refuse the worker's certificate. */
  otherCaCert: Buffer;
  /** A client cert from an unrelated CA: a worker in mTLS mode must refuse it. */
  otherCaClientCert: Buffer;
  otherCaClientKey: Buffer;
  /** A client cert from the CA that expired on 2020-01-02: a worker in mTLS mode must refuse it. */
  expiredClientCert: Buffer;
  expiredClientKey: Buffer;
  /** Where the files are (`ca.pem`, `server.pem`, …), for tests that pass paths. */
  dir: string;
}

export const genCertsScript = fileURLToPath(new URL("../../scripts/gen-certs.sh", import.meta.url));

/** Which file of the script's output fills which field. */
const files = {
  caCert: "ca.pem",
  serverCert: "server.pem",
  serverKey: "server.key",
  clientCert: "client.pem",
  clientKey: "client.key",
  otherCaCert: "other-ca.pem",
  otherCaClientCert: "other-client.pem",
  otherCaClientKey: "other-client.key",
  expiredClientCert: "expired-client.pem",
  expiredClientKey: "expired-client.key",
} as const satisfies Record<Exclude<keyof TestCerts, "dir">, string>;

let pending: Promise<TestCerts> | undefined;

/**
 * Generates the test certificates once per process, in a fresh temp dir (never in the repo,
 * so CI and parallel test files cannot trip over each other), and reads them. The dir is
 * removed when the process exits.
 */
export function ensureTestCerts(): Promise<TestCerts> {
  pending ??= generate().catch((error: unknown) => {
    pending = undefined;
    throw error;
  });
  return pending;
}

async function generate(): Promise<TestCerts> {
  const dir = mkdtempSync(join(tmpdir(), "blacktree-certs-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  await promisify(execFile)("bash", [genCertsScript, dir], { timeout: 30_000 });
  const entries = await Promise.all(
    Object.entries(files).map(async ([field, name]) => [field, await readFile(join(dir, name))] as const),
  );
  return { ...(Object.fromEntries(entries) as Record<keyof typeof files, Buffer>), dir };
}
