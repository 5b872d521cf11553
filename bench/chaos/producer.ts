/**
 * Chaos producer process: a `JobClient` on `AmqpQueue`/`AmqpEvents` (straight to the broker: the
 * faults are on the dispatchers' side), as a user's API server would run it.
 *
 * - `run`: submits `jobs` jobs `chaos-<i>` with idempotency key `chaos-key-<i>` at `rate` per
 *   second (open loop, at most `window` submits awaiting their confirm), each a `chaos` job of
 *   a seeded duration; a submit that fails is sent again with the same id and key. Resolves when
 *   every job's `result()` has settled, or at `deadlineAt`. Sends a `progress` event every second.
 * - `deadLetters`: the jobs in the dead-letter queue, with their reasons;
 * - `outcomes`: per job, how its handle ended and how many `result` events for it this process
 *   saw on its own `"*"` subscription (so results after the first, which a handle ignores, are
 *   counted too).
 * It also sends a `link` event each time its own broker connection drops or comes back.
 * Args: --queue NAME [--urls URL,URL,… (the nodes of a cluster; default the local broker)]
 */
import { setTimeout as sleep } from "node:timers/promises";
import { OrchestratorError } from "../../src/errors.ts";
import { JobClient } from "../../src/client/job-client.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { childArgs, sendEvent, serveChild, signalFatal, signalReady } from "../lib/child.ts";
import { openAmqp } from "../product/amqp.ts";
import { Random } from "./random.ts";

/** Arguments of the `run` command. */
export interface ProducerRunArgs {
  jobs: number;
  /** Jobs per second. */
  rate: number;
  seed: number;
  minMs: number;
  maxMs: number;
  maxAttempts: number;
  /** Epoch ms after which the run stops waiting for results. */
  deadlineAt: number;
  /** @default 256 */
  window?: number;
}

/** What `run` resolves with. */
export interface ProducerRunSummary {
  submitted: number;
  /** Submits sent again after a failure (same id and key). */
  resubmits: number;
  /** Jobs whose first submit failed with an unknown outcome (it may be queued twice). */
  uncertainSubmits: string[];
  firstSubmitAt: number;
  lastSubmitAt: number;
  lastResultAt: number;
  settled: number;
  timedOut: boolean;
  /** Why submits failed, with how many times each message was seen. */
  submitErrors: Record<string, number>;
  /** Per job sent more than once: the try that succeeded (0 = first) and when (epoch ms). */
  lastTries: Record<string, { tries: number; at: number }>;
}

/**
 * One job as the producer saw it: `[id, status, attempt, resultPid, resultAttempt, resultEvents,
 * resultAt, error, submitted]`; `submitted` is true once a submit of it was confirmed (it has a handle).
 */
export type ProducerOutcome = [string, "completed" | "failed" | "cancelled" | "pending", number, number | null, number | null, number, number | null, string | null, boolean];

interface Tracked {
  status: ProducerOutcome[1];
  attempt: number;
  pid: number | null;
  resultAttempt: number | null;
  resultAt: number | null;
  error: string | null;
  submitted: boolean;
}

try {
  const args = childArgs();
  const urls = args.urls?.split(",").filter(Boolean);
  const amqp = await openAmqp(args.queue!, "chaos-producer", (source, error) => sendEvent("amqpError", { source, message: error.message }), urls && urls.length > 0 ? urls : undefined);
  // The producer's link goes straight to the broker: a drop here is no injected fault (the broker
  // itself went away), and the parent records it as an observed one.
  amqp.queue.on("disconnected", ({ error }) => sendEvent("link", { state: "disconnected", at: Date.now(), message: error.message }));
  amqp.queue.on("reconnected", () => sendEvent("link", { state: "reconnected", at: Date.now(), message: "" }));
  const client = new JobClient({ queue: amqp.queue, events: amqp.events });
  client.on("error", () => {});
  const tracked = new Map<string, Tracked>();
  const resultEvents = new Map<string, number>();
  // Our own subscription, opened before the first submit: the handle keeps only the first result.
  const subscription = await amqp.events.subscribe("*", (event: JobEvent) => {
    if (event.kind === "result") resultEvents.set(event.jobId, (resultEvents.get(event.jobId) ?? 0) + 1);
  });
  let submitted = 0;
  let settled = 0;

  const run = async (a: ProducerRunArgs): Promise<ProducerRunSummary> => {
    const random = new Random(a.seed ^ 0x5eed);
    const window = a.window ?? 256;
    const summary: ProducerRunSummary = { submitted: 0, resubmits: 0, uncertainSubmits: [], firstSubmitAt: Date.now(), lastSubmitAt: 0, lastResultAt: 0, settled: 0, timedOut: false, submitErrors: {}, lastTries: {} };
    const results: Promise<void>[] = [];
    let inFlight = 0;
    let freed: (() => void) | undefined;
    const progress = setInterval(() => {
      let completed = 0;
      for (const t of tracked.values()) if (t.status === "completed") completed++;
      sendEvent("progress", { submitted, settled, completed, pending: client.pending });
    }, 1000);

    const submitOne = async (i: number, ms: number): Promise<void> => {
      const id = `chaos-${i}`;
      const t: Tracked = { status: "pending", attempt: 0, pid: null, resultAttempt: null, resultAt: null, error: null, submitted: false };
      tracked.set(id, t);
      for (let tries = 0; ; tries++) {
        try {
          const handle = await client.submit({ type: "chaos", payload: { ms }, id, idempotencyKey: `chaos-key-${i}`, maxAttempts: a.maxAttempts, timeoutMs: 30_000 });
          submitted++;
          t.submitted = true;
          summary.lastSubmitAt = Date.now();
          if (tries > 0) summary.lastTries[id] = { tries, at: summary.lastSubmitAt };
          results.push(
            handle.result().then(
              (value) => {
                const r = value as { pid: number; attempt: number };
                Object.assign(t, { status: "completed", pid: r.pid, resultAttempt: r.attempt });
              },
              (error: unknown) => {
                t.status = handle.state === "cancelled" ? "cancelled" : "failed";
                t.error = error instanceof Error ? error.message : String(error);
              },
            ).finally(() => {
              t.attempt = handle.attempt;
              t.resultAt = summary.lastResultAt = Date.now();
              settled++;
            }),
          );
          return;
        } catch (error) {
          // The broker is reached directly, so this is rare; the same id and key go again.
          if (tries === 0 && error instanceof OrchestratorError && error.code === "unknown_outcome") summary.uncertainSubmits.push(id);
          summary.resubmits++;
          const why = error instanceof OrchestratorError ? `${error.code}: ${error.rawMessage}` : String(error);
          summary.submitErrors[why] = (summary.submitErrors[why] ?? 0) + 1;
          if (Date.now() > a.deadlineAt) {
            t.error = `never submitted: ${(error as Error).message}`;
            return;
          }
          await sleep(200);
        }
      }
    };

    const start = Date.now();
    for (let i = 0; i < a.jobs && Date.now() < a.deadlineAt; i++) {
      // Open-loop pacing: job i is due at start + i / rate, whatever the earlier ones did.
      const wait = start + (i * 1000) / a.rate - Date.now();
      if (wait > 1) await sleep(wait);
      while (inFlight >= window) await new Promise<void>((resolve) => (freed = resolve));
      inFlight++;
      void submitOne(i, random.int(a.minMs, a.maxMs)).finally(() => {
        inFlight--;
        freed?.();
        freed = undefined;
      });
    }
    while (inFlight > 0) await new Promise<void>((resolve) => (freed = resolve));
    const all = Promise.all(results).then(() => false);
    const timedOut = await Promise.race([all, sleep(Math.max(0, a.deadlineAt - Date.now())).then(() => true)]);
    clearInterval(progress);
    return { ...summary, submitted, settled, timedOut };
  };

  serveChild(
    {
      run,
      /** What the dead-letter queue holds (a job the broker dead-lettered is never completed). */
      deadLetters: async () =>
        (await amqp.queue.deadLetters({ limit: 10_000, timeoutMs: 10_000 })).map((d) => ({ jobId: d.job?.id ?? null, reason: d.reason, at: d.at })),
      outcomes: (): ProducerOutcome[] =>
        [...tracked].map(([id, t]) => [id, t.status, t.attempt, t.pid, t.resultAttempt, resultEvents.get(id) ?? 0, t.resultAt, t.error, t.submitted]),
    },
    {
      onExit: async () => {
        await subscription.close().catch(() => {});
        await client.close();
        await amqp.close();
      },
    },
  );
  signalReady({ pid: process.pid });
} catch (err) {
  signalFatal(err);
}
