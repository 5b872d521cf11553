import { OrchestratorError } from "../errors.ts";
import { delay, throwIfAborted } from "../signals.ts";

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. @default 5000 */
  timeoutMs?: number;
  /** Pause between two checks. @default 10 */
  intervalMs?: number;
  /** Named in the timeout error. @default "condition" */
  what?: string;
  signal?: AbortSignal;
}

/**
 * Polls `check` until it returns a value other than `undefined`, `false` or `null`, and resolves
 * with that value. Meant for tests on real time (a broker, worker processes), where "eventually"
 * must still be bounded.
 *
 * @example
 * ```ts
 * const letters = await waitFor(async () => { const d = await deadLetters(); return d.length === 2 && d; });
 * ```
 * @throws {OrchestratorError} `deadline_exceeded` after `timeoutMs` (with the last error `check`
 * threw as `cause`); the signal's reason.
 */
export async function waitFor<T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: WaitForOptions = {},
): Promise<T> {
  const { timeoutMs = 5000, intervalMs = 10, what = "condition", signal } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    throwIfAborted(signal);
    try {
      const value = await check();
      if (value !== undefined && value !== null && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      throw new OrchestratorError("deadline_exceeded", `${what} not reached within ${timeoutMs} ms`, { cause: lastError });
    }
    await delay(intervalMs, { signal });
  }
}
