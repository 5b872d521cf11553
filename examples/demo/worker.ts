/**
 * A demo worker process: `serveWorker()` with one `build` handler that simulates a build of a
 * given length in steps, reporting progress and log lines, and stopping the moment its signal
 * fires. Started by `examples/demo.ts`; prints `ready <port>` once it listens.
 *
 *   node examples/demo/worker.ts --id w1 --slots 2
 *
 * It imports the package by name, as an app does: copy it into a project that depends on
 * @blacktree/orchestrator and run it with `node` (22.18+, which runs TypeScript). In this
 * repository, add `--import ./scripts/source-imports.mjs` to run it against the sources.
 */
import { parseArgs } from "node:util";
import { serveWorker } from "@blacktree/orchestrator/worker";
import type { JobContext } from "@blacktree/orchestrator/worker";

export interface BuildPayload {
  service: string;
  steps: number;
  stepMs: number;
}

export interface BuildResult {
  service: string;
  image: string;
  worker: string;
}

const { values } = parseArgs({
  options: {
    id: { type: "string", default: "worker" },
    slots: { type: "string", default: "2" },
    port: { type: "string", default: "0" },
  },
});
const workerId = values.id;

async function build(payload: BuildPayload, ctx: JobContext): Promise<BuildResult> {
  for (let step = 1; step <= payload.steps; step++) {
    ctx.log(`[${workerId}] step ${step}/${payload.steps} for ${payload.service}`);
    // Each step waits on the job's signal, so a cancel, a deadline or a shutdown stops it at once.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, payload.stepMs);
      ctx.signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          reject(ctx.signal.reason);
        },
        { once: true },
      );
    });
    ctx.progress(step / payload.steps, `step ${step}/${payload.steps}`);
  }
  return { service: payload.service, image: `registry.local/${payload.service}:${ctx.jobId.slice(0, 8)}`, worker: workerId };
}

const server = await serveWorker({
  handlers: { build },
  host: "127.0.0.1",
  port: Number(values.port),
  slots: Number(values.slots),
  labels: { worker: workerId },
  gracePeriodMs: 2000,
});
process.stdout.write(`ready ${server.port}\n`);
