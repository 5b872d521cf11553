/**
 * Product worker process: `serveWorker()` on 127.0.0.1 with the bench's handlers.
 * - `noop`: returns null (throughput);
 * - `stamp`: returns `{ startedAt }`, the epoch ms its handler started (latency);
 * - `hold`: tells the parent it started (`started` event with job id, attempt, time), then waits for its
 *   signal and tells the parent when it fired (`aborted` event); attempts above
 *   `payload.holdAttempts` return at once instead (cancel and failover).
 * Args: --slots N
 */
import "./telemetry-mode.ts";
import { serveWorker } from "../../src/worker/serve-worker.ts";
import type { JobContext } from "../../src/worker/types.ts";
import { childArgs, sendEvent, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { announceIfDiscovering } from "./discovery-mode.ts";

function hold(payload: { holdAttempts?: number }, ctx: JobContext): Promise<unknown> {
  const at = nowMs();
  sendEvent("started", { jobId: ctx.jobId, attempt: ctx.attempt, at, pid: process.pid });
  if (ctx.attempt > (payload?.holdAttempts ?? Infinity)) return Promise.resolve({ attempt: ctx.attempt });
  return new Promise((_resolve, reject) => {
    const onAbort = (): void => {
      sendEvent("aborted", { jobId: ctx.jobId, attempt: ctx.attempt, at: nowMs(), pid: process.pid });
      reject(ctx.signal.reason);
    };
    if (ctx.signal.aborted) onAbort();
    else ctx.signal.addEventListener("abort", onAbort, { once: true });
  });
}

try {
  const server = await serveWorker({
    host: "127.0.0.1",
    port: 0,
    slots: Number(childArgs().slots ?? 16),
    handleSignals: false,
    gracePeriodMs: 1000,
    handlers: {
      noop: async () => null,
      stamp: async () => ({ startedAt: nowMs() }),
      hold: hold as (payload: never, ctx: JobContext) => Promise<unknown>,
    },
  });
  // With discovery on (the features section), the orchestrator finds this worker by its announcements.
  const announcer = await announceIfDiscovering(server.address, server.description);
  serveChild({ running: () => server.running }, {
    onExit: async () => {
      await announcer?.close().catch(() => {});
      await server.close({ signal: AbortSignal.timeout(1500) });
    },
  });
  signalReady({ address: server.address, port: server.port });
} catch (err) {
  signalFatal(err);
}
