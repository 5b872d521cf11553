import { writeFile } from "node:fs/promises";
import { nonRetryable, OrchestratorError } from "../errors.ts";
import type { OrchestratorErrorCode } from "../errors.ts";
import { abortReason, cancelReasonOf, delay } from "../signals.ts";
import type { JobContext, JobHandlers } from "../worker/types.ts";

/** What `waitForAbort` writes to its marker file when its signal fires. */
export interface AbortMarker {
  jobId: string;
  /** `code` of the signal's reason (`canceled`, `deadline_exceeded`, `worker_lost`). */
  code: string;
  /** The cancel reason it stands for, when it is one. */
  reason: string | null;
  /** Epoch milliseconds when the signal fired. */
  at: number;
}

/** Resolves when `signal` fires (never rejects). */
function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

/**
 * Handlers with fixed, documented behaviour that `describeTransportContract()` runs on the
 * worker under test. They live in their own module so a worker process can host the very same
 * functions: `serveWorker({ handlers: contractHandlers })` in the child, the suite in the parent.
 *
 * - `echo(payload)`: returns the payload.
 * - `context()`: returns `{ jobId, attempt, fencingToken, type, idempotencyKey, trace, deadline }` from its context (nulls for absent).
 * - `sleep({ ms })`: waits `ms` (ending early with the abort reason when its signal fires), returns `{ slept: ms }`.
 * - `progress({ steps })`: reports progress -1 ("start", clamped to 0); then for each step i a log
 *   line `step i` (stdout for odd i, stderr for even) and progress i/steps (`step i`); then
 *   progress 2 ("done", clamped to 1); returns `{ steps }`.
 * - `fail({ message })`: throws `new Error(message)`.
 * - `failNonRetryable({ message })`: throws `nonRetryable(message)`.
 * - `waitForAbort({ marker? })`: reports progress 0 ("waiting"), waits for its signal, writes an
 *   {@link AbortMarker} as JSON to the file `marker` (when given), then throws the abort reason.
 * - `badResult()`: returns a value JSON cannot carry (a BigInt).
 * - `throwValue({ kind })`: throws an `OrchestratorError` of code `kind` (`"orchestrator:<code>"`),
 *   an empty `Error` (`"empty"`), a plain object (`"object"`) or nothing (`"undefined"`).
 * - `progressValues({ values })`: reports each of `values` as progress (`"Infinity"`, `"-Infinity"`
 *   and `"NaN"` as strings, since JSON has no such numbers), then returns.
 * - `logStreams({ streams })`: logs `line <i>` on each of `streams` (`null` for none), then returns.
 */
export const contractHandlers = {
  echo: async (payload: unknown) => payload,
  context: async (_payload: unknown, ctx: JobContext) => ({
    jobId: ctx.jobId,
    attempt: ctx.attempt,
    fencingToken: ctx.fencingToken,
    type: ctx.type,
    idempotencyKey: ctx.idempotencyKey ?? null,
    trace: ctx.trace ?? null,
    deadline: ctx.deadline,
  }),
  sleep: async (payload: { ms: number }, ctx: JobContext) => {
    await delay(payload.ms, { signal: ctx.signal });
    return { slept: payload.ms };
  },
  progress: async (payload: { steps: number }, ctx: JobContext) => {
    ctx.progress(-1, "start");
    for (let i = 1; i <= payload.steps; i++) {
      ctx.log(`step ${i}`, i % 2 === 1 ? "stdout" : "stderr");
      ctx.progress(i / payload.steps, `step ${i}`);
    }
    ctx.progress(2, "done");
    return { steps: payload.steps };
  },
  fail: async (payload: { message: string }) => {
    throw new Error(payload.message);
  },
  failNonRetryable: async (payload: { message: string }) => {
    throw nonRetryable(payload.message);
  },
  waitForAbort: async (payload: { marker?: string }, ctx: JobContext) => {
    ctx.progress(0, "waiting");
    await aborted(ctx.signal);
    const reason = abortReason(ctx.signal);
    if (payload?.marker) {
      const marker: AbortMarker = { jobId: ctx.jobId, code: reason.code, reason: cancelReasonOf(reason) ?? null, at: Date.now() };
      await writeFile(payload.marker, JSON.stringify(marker));
    }
    throw reason;
  },
  badResult: async () => ({ big: 10n }),
  throwValue: async (payload: { kind: string }) => {
    if (payload.kind.startsWith("orchestrator:")) throw new OrchestratorError(payload.kind.slice("orchestrator:".length) as OrchestratorErrorCode, "thrown by the handler", { retryable: false });
    if (payload.kind === "empty") throw new Error();
    if (payload.kind === "object") throw { code: "E_QUOTA", left: 0 };
    throw undefined;
  },
  progressValues: async (payload: { values: Array<number | string> }, ctx: JobContext) => {
    for (const value of payload.values) ctx.progress(typeof value === "string" ? Number(value) : value, String(value));
    return null;
  },
  logStreams: async (payload: { streams: Array<string | null> }, ctx: JobContext) => {
    payload.streams.forEach((stream, i) => ctx.log(`line ${i}`, (stream ?? undefined) as "stdout" | "stderr" | undefined));
    return null;
  },
} satisfies JobHandlers;

/** Name of one of the {@link contractHandlers}. */
export type ContractHandlerName = keyof typeof contractHandlers;

/** The names of all {@link contractHandlers}. */
export const contractHandlerNames: readonly ContractHandlerName[] = Object.freeze(Object.keys(contractHandlers) as ContractHandlerName[]);
