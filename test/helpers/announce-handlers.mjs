// Handlers for worker processes started with `blacktree-worker --handlers <this file>` (plain
// JavaScript, so any node runs it).
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export const handlers = {
  /** Returns where it ran. */
  async where(_payload, ctx) {
    return { pid: process.pid, attempt: ctx.attempt };
  },
  /**
   * Runs until the file `release` exists (polling), ignoring shutdown but not its signal; returns
   * where it ran. Lets a test hold a job while it signals the worker.
   */
  async hold(payload, ctx) {
    ctx.progress(0, "holding");
    while (!existsSync(payload.release)) {
      ctx.signal.throwIfAborted();
      await sleep(20);
    }
    return { pid: process.pid, attempt: ctx.attempt };
  },
};
