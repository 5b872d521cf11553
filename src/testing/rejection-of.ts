import { OrchestratorError } from "../errors.ts";

/**
 * Resolves with the {@link OrchestratorError} `promise` rejects with, so a test can assert on its
 * `code`, `retryable` and `details`.
 *
 * @example
 * ```ts
 * expect((await rejectionOf(handle.result())).code).toBe("canceled");
 * ```
 * @throws {Error} when `promise` resolves, or rejects with something else than an `OrchestratorError`.
 */
export async function rejectionOf(promise: Promise<unknown>): Promise<OrchestratorError> {
  let value: unknown;
  try {
    value = await promise;
  } catch (error) {
    if (error instanceof OrchestratorError) return error;
    throw new Error(`expected an OrchestratorError, got ${String(error)}`, { cause: error });
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(value) ?? String(value)}`);
}
