import { emitSafely, reportError } from "../../events.ts";
import type { AnyEmitter } from "../../events.ts";
import type { OrchestratorError } from "../../errors.ts";
import type { AmqpConnection } from "./amqp-connection.ts";
import { type Logger, logSafely } from "../../telemetry/logger.ts";

/**
 * Reports errors no call can return: to the `error` listeners as `{ error, source }`, or,
 * without any, logged once with `console.warn` (a throwing listener never crashes anything).
 * @internal
 */
export function reporter<S extends string>(emitter: AnyEmitter, name: string, logger: () => Logger | undefined = () => undefined): (error: OrchestratorError, source: S) => void {
  return (error, source) => reportError(emitter, error, { source }, name, logger());
}

/**
 * The connection's record of its own events for its logger: a lost link (`warn`, it reconnects by
 * itself), the link back (`info`), an error (`error`).
 * @internal
 */
export function logConnectionEvent(logger: Logger, event: string, payload: unknown): void {
  const p = (payload ?? {}) as { error?: OrchestratorError; node?: { index: number }; attempts?: number; downtimeMs?: number };
  const node = p.node === undefined ? {} : { node: p.node.index };
  if (event === "disconnected") logSafely(logger, "warn", { ...node, code: p.error?.code }, `AmqpConnection: lost the broker, reconnecting: ${p.error?.rawMessage ?? ""}`);
  else if (event === "reconnected") logSafely(logger, "info", { ...node, attempts: p.attempts, downtimeMs: p.downtimeMs }, "AmqpConnection: reconnected");
  else if (event === "error" && p.error !== undefined) logSafely(logger, "error", { ...p.error.details, code: p.error.code }, `AmqpConnection: ${p.error.message}`);
}

/**
 * Re-emits the connection's `disconnected` and `reconnected` events on `emitter` (safely: a
 * throwing listener is reported to `report` as source `listener`, never thrown into the
 * connection's reconnect loop), and reports its errors when the emitter owns it. Returns the
 * function that stops it.
 * @internal
 */
export function forwardConnectionEvents(
  connection: AmqpConnection,
  emitter: AnyEmitter,
  report: (error: OrchestratorError, source: "connection" | "listener") => void,
  owned: boolean,
): () => void {
  const onListenerError = (error: OrchestratorError) => report(error, "listener");
  const onDisconnected = (e: unknown) => emitSafely(emitter, onListenerError, "disconnected", e);
  const onReconnected = (e: unknown) => emitSafely(emitter, onListenerError, "reconnected", e);
  const onError = (e: { error: OrchestratorError }) => report(e.error, "connection");
  connection.on("disconnected", onDisconnected);
  connection.on("reconnected", onReconnected);
  if (owned) connection.on("error", onError);
  return () => {
    connection.off("disconnected", onDisconnected);
    connection.off("reconnected", onReconnected);
    connection.off("error", onError);
  };
}
