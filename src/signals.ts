import { OrchestratorError } from "./errors.ts";
import { isCancelReason } from "./job/event-checks.ts";
import type { CancelReason } from "./job/types.ts";

/**
 * Signal helpers shared by every class that waits (connect keeps its `signals.ts` apart the same way).
 * @internal
 */

/** The `OrchestratorError` an abort with `reason` carries. */
export function cancelError(reason: CancelReason, message?: string): OrchestratorError {
  const code = reason === "timeout" ? "deadline_exceeded" : reason === "worker_lost" ? "worker_lost" : "canceled";
  return new OrchestratorError(code, message ?? `job ${reason === "requested" ? "cancelled" : reason}`, {
    details: { reason },
    retryable: reason === "worker_lost" || reason === "timeout",
  });
}

/** The {@link CancelReason} an abort error stands for, or undefined for other errors. */
export function cancelReasonOf(error: unknown): CancelReason | undefined {
  if (!(error instanceof OrchestratorError)) return undefined;
  const reason = error.details.reason;
  if (isCancelReason(reason)) return reason;
  if (error.code === "canceled") return "requested";
  if (error.code === "deadline_exceeded") return "timeout";
  if (error.code === "worker_lost") return "worker_lost";
  return undefined;
}

/** The reason of an aborted signal as an `OrchestratorError`. */
export function abortReason(signal: AbortSignal): OrchestratorError {
  return OrchestratorError.from(signal.reason ?? new OrchestratorError("canceled", "aborted"), "canceled");
}

/** Throws the signal's reason (as an `OrchestratorError`) when it has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortReason(signal);
}

/**
 * Combines an optional caller signal with an optional timeout into one signal, the timeout
 * firing `deadline_exceeded`. `dispose()` clears the timer; call it in `finally`.
 */
export function waitSignal(options: { signal?: AbortSignal | undefined; timeoutMs?: number | undefined } = {}, what = "operation"): {
  signal: AbortSignal | undefined;
  dispose: () => void;
} {
  const { signal, timeoutMs } = options;
  if (timeoutMs === undefined) return { signal, dispose: () => {} };
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new OrchestratorError("deadline_exceeded", `${what} timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  timer.unref?.();
  const combined = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
  return { signal: combined, dispose: () => clearTimeout(timer) };
}

/**
 * Resolves with `promise`, or rejects with the signal's reason as soon as it fires; the
 * listener is removed either way.
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Waits `ms` milliseconds; rejects with the signal's reason if it fires first. */
export function delay(ms: number, options: { signal?: AbortSignal | undefined; unref?: boolean } = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (options.unref) timer.unref?.();
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
