/** A promise with its `resolve` and `reject` exposed; see {@link deferred}. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
  /** Whether `resolve` or `reject` was called. */
  readonly settled: boolean;
}

/**
 * A promise settled from outside, for tests that must hold a handler or a listener at a chosen
 * point. Later calls after the first settle are ignored.
 *
 * @example
 * ```ts
 * const started = deferred<void>();
 * const handlers = { build: async (_p, ctx) => { started.resolve(); await never(ctx.signal); } };
 * await started.promise;
 * ```
 */
export function deferred<T = void>(): Deferred<T> {
  let settled = false;
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    promise,
    resolve(value) {
      settled = true;
      resolve(value);
    },
    reject(reason) {
      settled = true;
      reject(reason);
    },
    get settled() {
      return settled;
    },
  };
}
