import { emitSafely, reportError } from "../../events.ts";
import type { AnyEmitter } from "../../events.ts";
import type { OrchestratorError } from "../../errors.ts";
import type { AmqpConnection } from "./amqp-connection.ts";

/**
 * Reports errors no call can return: to the `error` listeners as `{ error, source }`, or,
 * without any, logged once with `console.warn` (a throwing listener never crashes anything).
 * @internal
 */
export function reporter<S extends string>(emitter: AnyEmitter, name: string): (error: OrchestratorError, source: S) => void {
  return (error, source) => reportError(emitter, error, { source }, name);
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
