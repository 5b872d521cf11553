import { OrchestratorError } from "../errors.ts";
import { raceSignal, waitSignal } from "../signals.ts";
import { checkInteger, checkNumber } from "../validate.ts";
import { deferred } from "./deferred.ts";

/** A countdown opened by a number of arrivals; see {@link latch}. */
export interface Latch {
  /** Arrivals still missing; never below 0. */
  readonly remaining: number;
  /** Counts one arrival; extra arrivals are ignored. */
  arrive(): void;
  /**
   * Resolves once every arrival happened (at once if they already did).
   * @throws {OrchestratorError} `deadline_exceeded` after `timeoutMs` (default: the latch's),
   * naming how many arrivals are missing; the signal's reason.
   */
  wait(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void>;
}

/**
 * A latch that opens after `count` arrivals (nats' test `Lock`): let `count` events happen,
 * then assert. The timeout runs from each `wait()` call, so fake timers control it.
 *
 * @example
 * ```ts
 * const done = latch(3);
 * dispatcher.on("jobCompleted", () => done.arrive());
 * await done.wait();
 * ```
 * @throws {OrchestratorError} `invalid_argument` unless `count` is an integer >= 0 and `timeoutMs` >= 0.
 */
export function latch(count: number, timeoutMs = 5000): Latch {
  let remaining = checkInteger("count", count, 0);
  checkNumber("timeoutMs", timeoutMs, 0);
  const open = deferred<void>();
  if (remaining === 0) open.resolve();
  return {
    get remaining() {
      return remaining;
    },
    arrive() {
      if (remaining === 0) return;
      remaining--;
      if (remaining === 0) open.resolve();
    },
    async wait(options = {}) {
      if (remaining === 0) return;
      const ms = options.timeoutMs ?? timeoutMs;
      const wait = waitSignal({ signal: options.signal, timeoutMs: ms }, "latch");
      try {
        await raceSignal(open.promise, wait.signal);
      } catch (error) {
        if (error instanceof OrchestratorError && error.code === "deadline_exceeded" && !options.signal?.aborted) {
          throw new OrchestratorError("deadline_exceeded", `latch still missing ${remaining} of ${count} arrivals after ${ms} ms`);
        }
        throw error;
      } finally {
        wait.dispose();
      }
    },
  };
}
