import type { EventEmitter } from "eventemitter3";
import { OrchestratorError } from "../errors.ts";

/**
 * Emitting that a user's listener cannot break.
 *
 * eventemitter3 calls listeners in a loop and stops at the first one that throws, so one faulty
 * listener would hide the event from every later one (the dispatcher's included) and unwind the
 * emitter's own code half-way through. `emitSafely` calls each listener on its own, keeps `once`
 * semantics (a once-listener is removed before it runs, as eventemitter3 does), and hands each
 * throw to `onListenerError` as an `OrchestratorError` `internal` whose `cause` is the throw.
 * Listeners run with the emitter as `this` (a `context` given to `on()` is not kept). Untyped:
 * each class wraps it in a private `#emit` typed by its events map.
 * @internal
 */
export function emitSafely(
  emitter: EventEmitter,
  onListenerError: (error: OrchestratorError) => void,
  event: string,
  ...args: unknown[]
): void {
  for (const listener of emitter.listeners(event)) {
    emitter.removeListener(event, listener, undefined, true);
    try {
      listener.apply(emitter, args);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      onListenerError(new OrchestratorError("internal", `a "${String(event)}" listener threw: ${message}`, { cause: error }));
    }
  }
}

const warned = new WeakSet<object>();

/**
 * The usual `onListenerError` of a class with an `error` event: re-emits the error to `error`
 * listeners when there are any (a throw there is dropped: there is nobody left to tell), else
 * warns once per emitter on the console so the bug is seen without flooding the log.
 * @internal
 */
export function reportListenerError(emitter: EventEmitter, error: OrchestratorError): void {
  if (emitter.listenerCount("error") > 0) {
    emitSafely(emitter, () => {}, "error", { error });
    return;
  }
  if (warned.has(emitter)) return;
  warned.add(emitter);
  console.warn(`@blacktree/orchestrator: ${error.message} (further listener errors of this emitter are not logged)`);
}
