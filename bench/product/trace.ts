/**
 * Timestamps along the dispatch path inside the orchestrator process, for `bench/latency-trace.ts`
 * (only when BENCH_TRACE is set: measured runs never pay for it). The queue and the events are
 * wrapped as a user could wrap them, so the product's code is unchanged: when each delivery
 * arrived, when its job started on a worker (`jobStarted`), how long each result event waited for
 * its publisher confirm, how many deliveries were held (unacked) every 5 ms, and GC pauses.
 */
import { PerformanceObserver } from "node:perf_hooks";
import type { Consumer, Delivery, JobEvents, JobQueue, PublishOptions } from "../../src/queue/types.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { nowMs } from "../lib/cpu.ts";

/** What a trace holds, as sent to the parent. */
export interface TraceSnapshot {
  /** Job id → epoch ms its delivery reached the dispatcher. */
  received: Record<string, number>;
  /** Job id → epoch ms the dispatcher started it on a worker. */
  started: Record<string, number>;
  /** Result events: [publish call epoch ms, ms until confirmed]. */
  resultConfirms: Array<[number, number]>;
  /** Every 5 ms: [epoch ms, deliveries held (received, not yet acked)]. */
  held: Array<[number, number]>;
  /** GC pauses of this process: [start epoch ms, duration ms, kind (perf_hooks' NODE_PERFORMANCE_GC_*: 1 minor, 2 major, 4 incremental, 8 weak callbacks)]. */
  gcs: Array<[number, number, number]>;
}

/** Records the orchestrator's side of the dispatch path. */
export class DispatchTrace {
  #snapshot: TraceSnapshot = { received: {}, started: {}, resultConfirms: [], held: [], gcs: [] };
  #held = 0;

  constructor() {
    setInterval(() => this.#snapshot.held.push([nowMs(), this.#held]), 5).unref();
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) this.#snapshot.gcs.push([performance.timeOrigin + entry.startTime, entry.duration, ((entry as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0)]);
    }).observe({ entryTypes: ["gc"] });
  }

  /** `queue`, with each delivery's arrival and ack recorded. */
  queue(queue: JobQueue): JobQueue {
    return {
      enqueue: (job, options) => queue.enqueue(job, options),
      close: () => queue.close(),
      consume: (handler: (delivery: Delivery) => void, options): Promise<Consumer> =>
        queue.consume((delivery) => {
          this.#snapshot.received[delivery.job.id] = nowMs();
          this.#held++;
          const settled = (): void => void this.#held--;
          handler({
            job: delivery.job,
            attempt: delivery.attempt,
            redelivered: delivery.redelivered,
            get settled() {
              return delivery.settled;
            },
            get signal() {
              return delivery.signal;
            },
            ack: () => delivery.ack().finally(settled),
            retry: (delayMs, reason) => delivery.retry(delayMs, reason).finally(settled),
            deadLetter: (reason) => delivery.deadLetter(reason).finally(settled),
          });
        }, options),
    };
  }

  /** `events`, with the confirm wait of each result event recorded. */
  events(events: JobEvents): JobEvents {
    return {
      publish: async (event: JobEvent, options?: PublishOptions) => {
        const at = nowMs();
        try {
          await events.publish(event, options);
        } finally {
          if (event.kind === "result") this.#snapshot.resultConfirms.push([at, nowMs() - at]);
        }
      },
      subscribe: (jobId, listener) => events.subscribe(jobId, listener),
      cancel: (command, options) => events.cancel(command, options),
      subscribeCancels: (listener) => events.subscribeCancels(listener),
      close: () => events.close(),
    };
  }

  /** The dispatcher's `jobStarted` listener. */
  readonly jobStarted = ({ job }: { job: { id: string } }): void => {
    this.#snapshot.started[job.id] = nowMs();
  };

  /** What was recorded since the last call. */
  take(): TraceSnapshot {
    const snapshot = this.#snapshot;
    this.#snapshot = { received: {}, started: {}, resultConfirms: [], held: [], gcs: [] };
    return snapshot;
  }
}
