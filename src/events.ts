import type { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "./errors.ts";

/**
 * The one home of "a listener can never hurt its emitter": every class of this package emits
 * through {@link emitSafely} and reports with {@link reportError}.
 *
 * eventemitter3 calls listeners in a loop and stops at the first one that throws, so one faulty
 * listener would hide the event from every later one (the dispatcher's included) and unwind the
 * emitter's own code half-way through (inside a reconnect loop, that closed a healthy
 * connection and opened it again, 29 times in 3 s).
 * @internal
 */

/** Any eventemitter3 emitter, whatever its event map. */
export type AnyEmitter = object;

/** The slice of an eventemitter3 emitter these helpers use. */
interface Untyped {
  listeners(event: string): Array<(...args: unknown[]) => void>;
  listenerCount(event: string): number;
  removeListener(event: string, fn?: (...args: unknown[]) => void, context?: unknown, once?: boolean): unknown;
}

/**
 * Calls each listener of `event` on its own, keeps `once` semantics (a once-listener is removed
 * before it runs, as eventemitter3 does), and hands each throw to `onListenerError` as an
 * `OrchestratorError` `internal` whose `cause` is the throw; a throwing `onListenerError` is
 * ignored. Listeners run with the emitter as `this` (a `context` given to `on()` is not kept).
 * Untyped: each class wraps it in a private `#emit` typed by its events map.
 */
export function emitSafely(emitter: AnyEmitter, onListenerError: (error: OrchestratorError) => void, event: string, ...args: unknown[]): void {
  const e = emitter as Untyped;
  for (const listener of e.listeners(event)) {
    e.removeListener(event, listener, undefined, true);
    try {
      listener.apply(emitter, args);
    } catch (error) {
      try {
        onListenerError(new OrchestratorError("internal", `a "${String(event)}" listener threw: ${describeThrown(error)}`, { cause: error }));
      } catch {
        // Reporting failed too: there is nobody left to tell.
      }
    }
  }
}

const warned = new WeakSet<object>();

/** The slice of a pino-shaped logger (the `logger` option) that errors are written to. */
export interface ErrorLog {
  error(fields: object, message?: string): void;
}

/**
 * Reports an error no call can return: written to `logger` when the host gave one (every time,
 * with the error's code, details and `extra`), and emitted (safely) to the emitter's `error`
 * listeners as `{ error, ...extra }` when there are any (a throw there is dropped: there is nobody
 * left to tell). With neither a logger nor a listener it is warned once per emitter on the
 * console, so the bug is seen without flooding the log.
 */
export function reportError(emitter: AnyEmitter, error: OrchestratorError, extra: Record<string, unknown> = {}, label = "@blacktree/orchestrator", logger?: ErrorLog): void {
  const e = emitter as Untyped;
  if (logger !== undefined) {
    try {
      logger.error({ ...error.details, ...extra, code: error.code }, `${label}: ${error.message}`);
    } catch {
      // A broken logger must not break the emitter either.
    }
  }
  if (e.listenerCount("error") > 0) {
    emitSafely(e, () => {}, "error", { error, ...extra });
    return;
  }
  if (logger !== undefined || warned.has(emitter)) return;
  warned.add(emitter);
  const source = typeof extra.source === "string" ? ` (${extra.source})` : "";
  console.warn(`${label}: ${error.message}${source}; listen to 'error' to see every such error (further ones of this emitter are not logged)`);
}

/** The usual `onListenerError` of a class with an `error` event whose payload is `{ error }`. */
export function reportListenerError(emitter: AnyEmitter, error: OrchestratorError, logger?: ErrorLog): void {
  reportError(emitter, error, {}, "@blacktree/orchestrator", logger);
}

/** A thrown value's message that never throws itself (a throwing `toString`, a null prototype…). */
export function describeThrown(value: unknown): string {
  try {
    if (value instanceof Error) return value.message || value.name || "Error";
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
