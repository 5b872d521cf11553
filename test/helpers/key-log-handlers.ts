/**
 * Handlers for the concurrency-key tests: each attempt appends `start <name> <attempt>` and
 * `end <name> <attempt>` lines to `payload.file` itself (synchronous appends, in the order they
 * happen on this worker), so a test judges overlap from the workers' own records.
 */
import { appendFileSync } from "node:fs";
import type { JobContext } from "../../src/worker/types.ts";

export const keyLogHandlers = {
  logged: async (payload: { file: string; name: string; ms: number }, ctx: JobContext): Promise<string> => {
    appendFileSync(payload.file, `start ${payload.name} ${ctx.attempt}\n`);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, payload.ms);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(ctx.signal.reason);
        }, { once: true });
      });
    } finally {
      appendFileSync(payload.file, `end ${payload.name} ${ctx.attempt}\n`);
    }
    return payload.name;
  },
};

export const keyLogHandlersModule = new URL(import.meta.url).pathname;
