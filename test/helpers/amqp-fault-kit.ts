/**
 * The parts of the AMQP fault tests shared by the shared-broker file (connection cuts, black holes)
 * and the private-broker files (restarts, node kills): a stand-in consumer, an at-least-once
 * producer, and the "everything done, nothing left" check.
 */
import { expect } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import type { AmqpQueue, AmqpQueueOptions } from "../../src/queue/amqp/amqp-queue.ts";
import type { Delivery } from "../../src/queue/types.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import type { RabbitMq } from "./rabbitmq.ts";

/** Fast recovery for tests: the production defaults (250 ms → 30 s) only make them slow. */
export const RECOVERY: Partial<AmqpQueueOptions> = { reconnect: { baseDelayMs: 50, maxDelayMs: 1000 }, connectTimeoutMs: 2000 };

/** What happened to a queue during a run. */
export function watch(queue: AmqpQueue) {
  const seen = { disconnected: 0, reconnected: 0, deliveryLost: 0 };
  queue.on("disconnected", () => seen.disconnected++);
  queue.on("reconnected", () => seen.reconnected++);
  queue.on("deliveryLost", () => seen.deliveryLost++);
  queue.on("error", () => {});
  return seen;
}

/**
 * A stand-in for the dispatcher: "runs" each job for `workMs`, then acks it. A delivery that is
 * lost meanwhile is not acked (its job comes back); an ack that fails is not counted. A delivery
 * for which `hold` says so is never acked (a job still running when the fault hits).
 */
export async function work(queue: AmqpQueue, prefetch: number, workMs: number, hold: (delivery: Delivery) => boolean = () => false) {
  const completed = new Map<string, number>();
  const attempts = new Map<string, number[]>();
  const held: Delivery[] = [];
  const state = { running: 0 };
  await queue.consume(
    (delivery: Delivery) => {
      attempts.set(delivery.job.id, [...(attempts.get(delivery.job.id) ?? []), delivery.attempt]);
      if (hold(delivery)) {
        held.push(delivery);
        return;
      }
      state.running++;
      setTimeout(() => {
        state.running--;
        if (delivery.signal?.aborted) return;
        delivery.ack().then(
          () => completed.set(delivery.job.id, (completed.get(delivery.job.id) ?? 0) + 1),
          () => {},
        );
      }, workMs);
    },
    { prefetch },
  );
  return { completed, attempts, held, state };
}

/**
 * An at-least-once producer publishing on `lanes` lanes at once: a publish whose outcome is
 * unknown, or that found no broker, is sent again.
 */
export async function produce(queue: AmqpQueue, jobs: readonly JobEnvelope[], lanes = 1): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < jobs.length) {
      const job = jobs[next++] as JobEnvelope;
      for (;;) {
        try {
          await queue.enqueue(job);
          break;
        } catch (error) {
          if (!(error instanceof OrchestratorError) || !["unknown_outcome", "unavailable"].includes(error.code)) throw error;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
}

/** Every job completed, nothing left in the queue or its dead letters. */
export async function expectAllDone(broker: Pick<RabbitMq, "messageCount">, queue: AmqpQueue, jobs: readonly JobEnvelope[], completed: Map<string, number>): Promise<void> {
  await waitFor(() => completed.size === jobs.length, { timeoutMs: 30_000, what: `${jobs.length} jobs completed` });
  expect(new Set(completed.keys())).toEqual(new Set(jobs.map((job) => job.id)));
  expect(await broker.messageCount(queue.names.jobs)).toBe(0);
  expect(await broker.messageCount(queue.names.deadLetters)).toBe(0);
}
