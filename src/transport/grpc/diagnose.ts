import { X509Certificate } from "node:crypto";
import { connect as netConnect } from "node:net";
import type { Socket } from "node:net";
import { checkServerIdentity, connect as tlsConnect } from "node:tls";
import type { PeerCertificate } from "node:tls";

/**
 * Why a connection to a worker could not be opened, in words a person can act on. grpc-js reports
 * most of these as "Failed to connect" with no reason, so when a session cannot be opened the
 * transport dials the worker once more itself, with the same credentials, and reads what the
 * socket and the TLS handshake say.
 * @internal
 */

/**
 * What went wrong, for code: `refused` (nothing listens), `unreachable` (no route, or no answer
 * within the time allowed), `plaintext_to_tls` (this side speaks plaintext, the worker TLS),
 * `tls_to_plaintext`, `unknown_ca` (the worker's certificate is not signed by our CA),
 * `expired` (the worker's certificate expired), `name_mismatch` (it is not valid for the name we
 * dialled), `client_cert_required`, `client_cert_rejected` (the worker refused our certificate:
 * another CA, expired, revoked), `tls` (another handshake failure), `unknown`.
 */
export type ConnectFailure =
  | "refused"
  | "unreachable"
  | "plaintext_to_tls"
  | "tls_to_plaintext"
  | "unknown_ca"
  | "expired"
  | "name_mismatch"
  | "client_cert_required"
  | "client_cert_rejected"
  | "tls"
  | "unknown";

/** The result of {@link diagnoseConnection}. */
export interface ConnectDiagnosis {
  readonly failure: ConnectFailure;
  /** One sentence saying what is wrong and what to check. */
  readonly reason: string;
}

/** How the transport dials: the address and, for TLS, the same material it gives grpc-js. */
export interface DiagnoseTarget {
  address: string;
  tls?: { ca: Buffer; cert: Buffer | null; key: Buffer | null; serverName?: string };
  timeoutMs: number;
}

/** What OpenSSL says when the peer's first bytes are not TLS. */
const NOT_TLS = /wrong version number|packet length too long|unknown protocol|http request/i;
/** How long to wait, after the handshake, for a TLS 1.3 server to refuse our certificate. */
const ALERT_WAIT_MS = 300;

/** Dials `target` once and says why a connection fails; undefined when it opened fine (the failure was elsewhere). */
export async function diagnoseConnection(target: DiagnoseTarget): Promise<ConnectDiagnosis | undefined> {
  const { host, port } = splitAddress(target.address);
  const tcp = await dialTcp(host, port, target.timeoutMs);
  if (tcp) return tcp;
  if (target.tls === undefined) {
    // A TLS server answers a TLS hello; a gRPC plaintext server answers with an HTTP/2 error or nothing.
    const probe = await dialTls(host, port, { rejectUnauthorized: false, timeoutMs: target.timeoutMs });
    // A TLS server completes the handshake, or refuses it with a TLS alert (one wanting a client certificate).
    const speaksTls = probe.kind === "connected" || (probe.kind === "error" && /alert/i.test(probe.error.message) && !NOT_TLS.test(probe.error.message));
    if (speaksTls) {
      return { failure: "plaintext_to_tls", reason: `${target.address} speaks TLS but this orchestrator connects in plaintext: give the transport \`tls\` options (at least the CA)` };
    }
    return undefined;
  }
  const { ca, cert, key, serverName } = target.tls;
  const result = await dialTls(host, port, { ca, cert, key, servername: serverName ?? host, rejectUnauthorized: true, timeoutMs: target.timeoutMs });
  if (result.kind === "connected") return undefined;
  if (result.kind === "timeout") return { failure: "unreachable", reason: `${target.address} accepted the connection but did not complete a TLS handshake within ${target.timeoutMs} ms` };
  return fromTlsError(result.error, target.address, serverName ?? host, ca, cert ?? undefined);
}

function fromTlsError(error: NodeJS.ErrnoException, address: string, name: string, ca: Buffer, clientCert: Buffer | undefined): ConnectDiagnosis {
  const sentCert = clientCert !== undefined;
  const code = error.code ?? "";
  const text = `${code} ${error.message}`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return { failure: "name_mismatch", reason: `the certificate of ${address} is not valid for the name ${name}: connect by a name it carries or set \`tls.serverName\`` };
  }
  if (code === "CERT_HAS_EXPIRED") return { failure: "expired", reason: `the certificate of ${address} has expired: renew the worker's certificate` };
  if (code === "CERT_NOT_YET_VALID") return { failure: "expired", reason: `the certificate of ${address} is not valid yet: check the worker's certificate dates and clock` };
  if (
    code === "SELF_SIGNED_CERT_IN_CHAIN" ||
    code === "DEPTH_ZERO_SELF_SIGNED_CERT" ||
    code === "UNABLE_TO_VERIFY_LEAF_SIGNATURE" ||
    code === "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" ||
    code === "UNABLE_TO_GET_ISSUER_CERT"
  ) {
    return { failure: "unknown_ca", reason: `the certificate of ${address} is not signed by a CA this orchestrator trusts (unknown CA): give the transport the CA that signed the worker's certificate` };
  }
  if (/certificate required/i.test(text)) {
    return { failure: "client_cert_required", reason: `${address} requires a client certificate: give the transport \`tls.cert\` and \`tls.key\`` };
  }
  if (/alert (?:certificate expired)/i.test(text)) {
    return { failure: "client_cert_rejected", reason: `${address} refused this orchestrator's client certificate as expired: renew it` };
  }
  if (/alert (?:unknown ca|bad certificate|certificate unknown|decrypt error|certificate revoked|unsupported certificate)/i.test(text) && sentCert) {
    return { failure: "client_cert_rejected", reason: `${address} refused this orchestrator's client certificate (${alertOf(text)}): it must be signed by a CA the worker trusts and be valid now` };
  }
  if (NOT_TLS.test(text)) {
    return { failure: "tls_to_plaintext", reason: `${address} speaks plaintext but this orchestrator connects with TLS: drop the transport's \`tls\` options or start the worker with TLS` };
  }
  if ((code === "ECONNRESET" || code === "EPIPE") && clientCert !== undefined) {
    return { failure: "client_cert_rejected", reason: `${address} closed the connection during the TLS handshake, refusing this orchestrator's client certificate${whyRefused(clientCert, ca)}` };
  }
  if (code === "ECONNRESET" || code === "EPIPE") return { failure: "tls", reason: `${address} closed the connection during the TLS handshake` };
  return { failure: "tls", reason: `the TLS handshake with ${address} failed: ${error.message.split("\n")[0]}` };
}

/**
 * What this side can tell about its own client certificate, which a worker refused without saying
 * why: expired (or not yet valid), or signed by another CA than the one this orchestrator trusts.
 */
function whyRefused(certPem: Buffer, caPem: Buffer): string {
  try {
    const cert = new X509Certificate(certPem);
    const now = Date.now();
    if (Date.parse(cert.validTo) < now) return `: it expired on ${new Date(cert.validTo).toISOString()} (renew it)`;
    if (Date.parse(cert.validFrom) > now) return `: it is not valid before ${new Date(cert.validFrom).toISOString()}`;
    const cas = caPem.toString("utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (cas.length > 0 && !cas.some((pem) => cert.checkIssued(new X509Certificate(pem)))) {
      return ": it is signed by another CA than the one this orchestrator trusts, which the worker does not know (unknown CA)";
    }
    return ": it is not signed by a CA the worker trusts, or was revoked";
  } catch {
    return "";
  }
}

/** The alert's name in an OpenSSL message such as `...:tlsv13 alert unknown ca:...`. */
function alertOf(text: string): string {
  return /alert ([a-z ]+)/i.exec(text)?.[1]?.trim() ?? "refused";
}

function splitAddress(address: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address.replace(/^dns:(?:\/\/\/)?/, ""));
  if (!match) return { host: address, port: 0 };
  return { host: match[1] ?? match[2] ?? address, port: Number(match[3]) };
}

function dialTcp(host: string, port: number, timeoutMs: number): Promise<ConnectDiagnosis | undefined> {
  return new Promise((resolve) => {
    const socket = netConnect({ host, port });
    const finish = (diagnosis: ConnectDiagnosis | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(diagnosis);
    };
    const timer = setTimeout(
      () => finish({ failure: "unreachable", reason: `${host}:${port} did not answer within ${timeoutMs} ms (no route, a firewall dropping packets, or a host that is down)` }),
      timeoutMs,
    );
    socket.once("connect", () => finish(undefined));
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED") return finish({ failure: "refused", reason: `nothing listens on ${host}:${port} (connection refused): is the worker running, on this port?` });
      if (error.code === "ENOTFOUND" || error.code === "EAI_AGAIN") return finish({ failure: "unreachable", reason: `the name ${host} does not resolve (${error.code})` });
      finish({ failure: "unreachable", reason: `${host}:${port} is unreachable (${error.code ?? error.message})` });
    });
  });
}

type TlsDial = { kind: "connected" } | { kind: "timeout" } | { kind: "error"; error: NodeJS.ErrnoException };

function dialTls(
  host: string,
  port: number,
  options: { rejectUnauthorized: boolean; timeoutMs: number; ca?: Buffer; cert?: Buffer | null; key?: Buffer | null; servername?: string },
): Promise<TlsDial> {
  return new Promise((resolve) => {
    let socket: Socket | undefined;
    let alertTimer: NodeJS.Timeout | undefined;
    const finish = (result: TlsDial) => {
      clearTimeout(timer);
      clearTimeout(alertTimer);
      socket?.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ kind: "timeout" }), options.timeoutMs);
    const tls = tlsConnect({
      host,
      port,
      ALPNProtocols: ["h2"],
      rejectUnauthorized: options.rejectUnauthorized,
      ...(options.ca ? { ca: options.ca } : {}),
      ...(options.cert ? { cert: options.cert } : {}),
      ...(options.key ? { key: options.key } : {}),
      ...(options.servername && !/^[\d.:]+$/.test(options.servername) ? { servername: options.servername } : {}),
      ...(options.servername ? { checkServerIdentity: checkIdentityAs(options.servername) } : {}),
    });
    socket = tls;
    tls.once("secureConnect", () => {
      // TLS 1.3: the server checks our certificate after our side of the handshake is done and
      // says so with an alert; a read shows it.
      alertTimer = setTimeout(() => finish({ kind: "connected" }), ALERT_WAIT_MS);
    });
    tls.once("error", (error: NodeJS.ErrnoException) => finish({ kind: "error", error }));
    tls.once("close", () => {
      if (alertTimer !== undefined) finish({ kind: "error", error: Object.assign(new Error("connection closed after the handshake"), { code: "ECONNRESET" }) });
    });
    tls.on("data", () => {});
  });
}

/** Checks the certificate against the name the transport dials (grpc's `ssl_target_name_override`). */
function checkIdentityAs(name: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => checkServerIdentity(name, cert);
}
