import { OrchestratorError } from "../../errors.ts";
import type { OrchestratorErrorCode } from "../../errors.ts";

/**
 * The one place where amqplib, AMQP and socket errors become {@link OrchestratorError}s
 * (connect-node keeps its `node-error.ts` the same way).
 * @internal
 */

/** AMQP reply codes (channel and connection close) and what they mean to us. */
const replyCodes: Record<number, OrchestratorErrorCode> = {
  311: "resource_exhausted", // CONTENT_TOO_LARGE
  312: "not_found", // NO_ROUTE
  313: "unavailable", // NO_CONSUMERS
  320: "unavailable", // CONNECTION_FORCED (broker shutting down, or an operator closed us)
  402: "invalid_argument", // INVALID_PATH
  403: "permission_denied", // ACCESS_REFUSED
  404: "not_found", // NOT_FOUND
  405: "precondition_failed", // RESOURCE_LOCKED (an exclusive queue of another connection)
  406: "precondition_failed", // PRECONDITION_FAILED
  501: "internal", // FRAME_ERROR
  502: "internal", // SYNTAX_ERROR
  503: "internal", // COMMAND_INVALID
  504: "internal", // CHANNEL_ERROR
  505: "internal", // UNEXPECTED_FRAME
  506: "resource_exhausted", // RESOURCE_ERROR
  530: "permission_denied", // NOT_ALLOWED (for example an unknown vhost)
  540: "precondition_failed", // NOT_IMPLEMENTED (for example global QoS on a quorum queue)
  541: "internal", // INTERNAL_ERROR
};

const socketCodes: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
]);

/** Whether the broker's text says it closed a channel for a delivery held past `consumer_timeout`. */
export function isConsumerTimeout(error: unknown): boolean {
  return error instanceof Error && /delivery acknowledgement on channel \d+ timed out/i.test(error.message);
}

/**
 * Translates anything amqplib or the socket threw into an `OrchestratorError`, keeping it as
 * `cause`. `context` prefixes the message (`declaring queue "jobs"`).
 */
export function fromAmqpError(error: unknown, context: string): OrchestratorError {
  if (error instanceof OrchestratorError) return error;
  const err = error instanceof Error ? error : new Error(String(error));
  const code = (err as { code?: unknown }).code;
  const message = `${context}: ${err.message}`;
  if (typeof code === "number") {
    if (isConsumerTimeout(err)) {
      return new OrchestratorError("deadline_exceeded", `${message} (raise the broker's consumer_timeout; see docs/rabbitmq.md)`, {
        cause: err,
        details: { replyCode: code, reason: "consumer_timeout" },
      });
    }
    return new OrchestratorError(replyCodes[code] ?? "internal", message, { cause: err, details: { replyCode: code } });
  }
  if (/ACCESS[-_]REFUSED|authentication|PLAIN login refused/i.test(err.message)) {
    return new OrchestratorError("unauthenticated", message, { cause: err, retryable: false });
  }
  if (/NOT[-_]ALLOWED|vhost/i.test(err.message) && /Handshake terminated/i.test(err.message)) {
    return new OrchestratorError("permission_denied", message, { cause: err });
  }
  // amqplib's text when the broker answers connection.open with connection.close: RabbitMQ does
  // that (530 NOT_ALLOWED) for a virtual host that does not exist or the user may not use.
  if (/Expected ConnectionOpenOk; got <ConnectionClose/.test(err.message)) {
    return new OrchestratorError(
      "permission_denied",
      `${context}: the broker refused to open the virtual host: it does not exist, or the user has no permission on it (${err.message})`,
      { cause: err, retryable: false, details: { reason: "vhost_refused" } },
    );
  }
  // The peer took the TCP connection but did not answer as an AMQP 0-9-1 broker.
  if (/opening handshake|Invalid frame|Unexpected frame|Frame size \d+ exceeds|Expected ConnectionStart|Frame on channel/i.test(err.message)) {
    return new OrchestratorError(
      "unavailable",
      `${context}: the server did not answer as an AMQP 0-9-1 broker; is this RabbitMQ's AMQP port (5672, or 5671 for amqps)? (${err.message})`,
      { cause: err, details: { reason: "not_amqp" } },
    );
  }
  if ((typeof code === "string" && socketCodes.has(code)) || /Heartbeat timeout|Unexpected close|Socket|ETIMEDOUT|closed|ended/i.test(err.message)) {
    return new OrchestratorError("unavailable", message, { cause: err });
  }
  if (err.name === "IllegalOperationError") return new OrchestratorError("unavailable", message, { cause: err });
  return new OrchestratorError("internal", message, { cause: err });
}

/** `url` without its password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:…@");
}

/** Whether retrying the same connection or declaration cannot help (bad credentials, conflicting topology). */
export function isFatal(error: OrchestratorError): boolean {
  return (
    error.code === "unauthenticated" ||
    error.code === "permission_denied" ||
    error.code === "precondition_failed" ||
    error.code === "invalid_argument"
  );
}

/**
 * Closes an amqplib channel or connection and resolves once it is closed, by either side.
 * amqplib's own `close()` never settles when the connection dies while it waits for close-ok,
 * so it is raced with the `close` event and a timeout.
 * @internal
 */
export function closeQuietly(target: { close(): Promise<void>; once(event: "close", listener: () => void): unknown }, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    timer.unref?.();
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    target.once("close", done);
    target.close().then(done, done);
  });
}
