import type { OrchestratorError } from "../../errors.ts";
import type { AmqpConnection } from "./amqp-connection.ts";

/** The slice of an eventemitter3 emitter that {@link reporter} and {@link forwardConnectionEvents} use. */
interface Emitter {
  emit(event: string, payload: unknown): boolean;
  listenerCount(event: string): number;
}

/**
 * Reports errors no call can return: to the `error` listeners, or, without any, logged once with
 * `console.warn` (a throwing listener never crashes anything).
 * @internal
 */
export function reporter<S extends string>(emitter: Emitter, name: string): (error: OrchestratorError, source: S) => void {
  let warned = false;
  return (error, source) => {
    if (emitter.listenerCount("error") > 0) {
      try {
        emitter.emit("error", { error, source });
      } catch {
        // An error listener that throws has nowhere left to report to.
      }
      return;
    }
    if (!warned) {
      warned = true;
      console.warn(`${name}: ${source} error (${error.message}); listen to 'error' to see every such error`);
    }
  };
}

/**
 * Re-emits the connection's `disconnected` and `reconnected` events on `emitter`, and reports its
 * errors when the emitter owns it. Returns the function that stops it.
 * @internal
 */
export function forwardConnectionEvents(connection: AmqpConnection, emitter: Emitter, report: ((error: OrchestratorError) => void) | undefined): () => void {
  const onDisconnected = (e: unknown) => emitter.emit("disconnected", e);
  const onReconnected = (e: unknown) => emitter.emit("reconnected", e);
  const onError = (e: { error: OrchestratorError }) => report?.(e.error);
  connection.on("disconnected", onDisconnected);
  connection.on("reconnected", onReconnected);
  if (report) connection.on("error", onError);
  return () => {
    connection.off("disconnected", onDisconnected);
    connection.off("reconnected", onReconnected);
    connection.off("error", onError);
  };
}
