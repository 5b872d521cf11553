/**
 * Product producer process: a `JobClient` on `AmqpQueue`/`AmqpEvents`, as a user's API server
 * would run it. Commands:
 * - `submitMany`: submits `count` jobs keeping at most `window` submits awaiting their confirm (as
 *   the baseline's producer does), and resolves once every result came back;
 * - `paced`: submits `stamp` jobs at a fixed rate and returns, per job, enqueue → handler start and
 *   enqueue → result;
 * - `submitHold` / `cancel`: one `hold` job, and cancelling it (the time of the `cancel()` call is returned).
 * Args: --queue NAME
 */
import "./telemetry-mode.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobHandle } from "../../src/client/job-handle.ts";
import { childArgs, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { nowMs } from "../lib/cpu.ts";
import { openAmqp } from "./amqp.ts";
import { benchPriority } from "./priority-mode.ts";
import { benchStore } from "./store-mode.ts";

try {
  const amqp = await openAmqp(childArgs().queue!, "producer");
  const store = benchStore();
  const client = new JobClient({ queue: amqp.queue, events: amqp.events, defaults: { timeoutMs: 60_000, maxAttempts: 5 }, ...(store === undefined ? {} : { store }) });
  const holding = new Map<string, JobHandle<unknown>>();

  const submitMany = async ({ count, window = 256, type = "noop" }: { count: number; window?: number; type?: string }) => {
    const firstSubmitAt = nowMs();
    let lastResultAt = 0;
    let failed = 0;
    const results: Promise<void>[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < count) {
        const priority = benchPriority(next++);
        const handle = await client.submit({ type, payload: null, ...(priority === undefined ? {} : { priority }) });
        results.push(
          handle.result().then(
            () => void (lastResultAt = nowMs()),
            () => void failed++,
          ),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(window, count) }, lane));
    await Promise.all(results);
    return { firstSubmitAt, lastResultAt, failed };
  };

  const paced = async ({ ratePerSecond, seconds }: { ratePerSecond: number; seconds: number }) => {
    const total = Math.max(1, Math.round(ratePerSecond * seconds));
    const gapMs = 1000 / ratePerSecond;
    const dispatchMs: number[] = [];
    const resultMs: number[] = [];
    // BENCH_TRACE: per job [id, submit call, submit resolved (confirmed), handler start, result here], epoch ms.
    const trace: Array<[string, number, number, number, number]> | undefined = process.env.BENCH_TRACE ? [] : undefined;
    let failed = 0;
    const pending: Promise<void>[] = [];
    const start = nowMs();
    for (let i = 0; i < total; i++) {
      // Open-loop pacing: job i is due at start + i * gap, whatever the earlier ones did.
      const due = start + i * gapMs;
      const wait = due - nowMs();
      if (wait > 1) await sleep(wait);
      const enqueuedAt = nowMs();
      pending.push(
        client.submit({ type: "stamp", payload: null }).then((handle) => {
          const confirmedAt = nowMs();
          return (handle.result() as Promise<{ startedAt: number }>).then((result) => {
            const at = nowMs();
            resultMs.push(at - enqueuedAt);
            dispatchMs.push(result.startedAt - enqueuedAt);
            trace?.push([handle.id, enqueuedAt, confirmedAt, result.startedAt, at]);
          });
        }).catch(() => void failed++),
      );
    }
    await Promise.all(pending);
    return { dispatchMs, resultMs, failed, achievedRate: (total * 1000) / (nowMs() - start), trace };
  };

  serveChild(
    {
      submitMany,
      paced,
      submitHold: async ({ holdAttempts }: { holdAttempts: number }) => {
        const handle = await client.submit({ type: "hold", payload: { holdAttempts } });
        holding.set(handle.id, handle);
        return { jobId: handle.id };
      },
      cancel: async ({ jobId }: { jobId: string }) => {
        const handle = holding.get(jobId);
        if (!handle) throw new Error(`no held job ${jobId}`);
        const at = nowMs();
        await handle.cancel();
        return { at };
      },
      // Resolves with the job's final state (the hold job ends cancelled, or completed after a failover).
      outcome: async ({ jobId }: { jobId: string }) => {
        const handle = holding.get(jobId);
        if (!handle) throw new Error(`no held job ${jobId}`);
        try {
          await handle.result({ timeoutMs: 20_000 });
        } catch {
          // Its state says how it ended.
        }
        holding.delete(jobId);
        return { state: handle.state, attempt: handle.attempt };
      },
    },
    {
      onExit: async () => {
        await client.close();
        await amqp.close();
      },
    },
  );
  signalReady();
} catch (err) {
  signalFatal(err);
}
