import { nonRetryable, OrchestratorError } from "../errors.ts";
import type { JobContext } from "../worker/types.ts";

/** The job type a worker serves for the conformance checks (docs/protocol.md, "Conformance"). */
export const CONFORMANCE_JOB_TYPE = "conformance.echo";

/** Payload of {@link conformanceEcho}. */
export interface ConformanceEchoPayload {
  value?: unknown;
  /** Progress events `i/steps` to report, each after a log line `step i`. */
  steps?: number;
  /** Report progress -0.5 and 1.5 first (the worker must clamp them to 0 and 1). */
  clampProbe?: boolean;
  /** Wait this long before returning, ending early when the job's signal fires. */
  sleepMs?: number;
  /** Fail with handler_failed: retryable, or permanent (`nonRetryable`). */
  fail?: "retryable" | "permanent";
}

/**
 * The `conformance.echo` handler in TypeScript: serve it beside your handlers
 * (`serveWorker({ handlers: { ...handlers, [CONFORMANCE_JOB_TYPE]: conformanceEcho } })`) to run
 * `blacktree-conformance` against the worker; a worker in another language implements the same
 * behaviour.
 */
export async function conformanceEcho(payload: ConformanceEchoPayload, ctx: JobContext): Promise<unknown> {
  if (payload.clampProbe) {
    ctx.progress(-0.5, "below");
    ctx.progress(1.5, "above");
  }
  const steps = payload.steps ?? 0;
  for (let i = 1; i <= steps; i++) {
    ctx.log(`step ${i}`);
    ctx.progress(i / steps, `${i}/${steps}`);
  }
  if (payload.sleepMs !== undefined && payload.sleepMs > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, payload.sleepMs);
      ctx.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
    });
    if (ctx.signal.aborted) throw OrchestratorError.from(ctx.signal.reason);
  }
  if (payload.fail === "permanent") throw nonRetryable("conformance: a permanent failure");
  if (payload.fail === "retryable") throw new Error("conformance: a retryable failure");
  return payload.value;
}
