import { afterAll, describe, expect, it } from "vitest";
import { Dispatcher, InProcessTransport, JobClient, WorkerPool } from "../../src/index.ts";
import { AmqpConnection, AmqpEvents, AmqpQueue } from "../../src/queue/amqp/index.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** The `q` quantile (0..1) of sorted values, nearest rank. */
function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

// Slow (about 2.5 minutes): the delays themselves are what is measured. `npm run test:cluster`.
describe.skipIf(!rabbit.available)("delayed jobs on RabbitMQ: how close to their due time they start", () => {
  afterAll(() => rabbit.cleanup());

  it("starts 240 jobs with mixed delays from 1 s to 2 min within 1 s of their due time (p99), none early", { timeout: 300_000 }, async () => {
    const queueName = rabbit.queueName("delayed-accuracy");
    const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 5 });
    const queue = new AmqpQueue({ connection, queueName });
    const events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 5000 });
    const startedAt = new Map<string, number>();
    const pool = new WorkerPool();
    const handlers = {
      tick: async (_payload: null, ctx: { jobId: string }) => {
        startedAt.set(ctx.jobId, Date.now());
        return null;
      },
    };
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers, slots: 64 }), slots: 64, admission: "trust" });
    const dispatcher = new Dispatcher({ queue, events, pool });
    const client = new JobClient({ queue, events });
    try {
      await dispatcher.start();
      // Delays from 1 s to 2 min, spread evenly with a stride that mixes their order and their
      // bits (so the number of levels a job passes through varies from 1 to 17).
      const count = 240;
      const delays = Array.from({ length: count }, (_, i) => 1000 + ((i * 7919 * 61) % 119_001));
      delays[0] = 1000;
      delays[1] = 120_000;
      const handles = [];
      for (const delayMs of delays) handles.push(await client.submit({ type: "tick", payload: null, delayMs, timeoutMs: 60_000 }));
      await Promise.all(handles.map((handle) => handle.result({ timeoutMs: 200_000 })));

      const lateness = handles.map((handle) => (startedAt.get(handle.id) as number) - (handle.runAt as number)).sort((a, b) => a - b);
      const hops = delays.map((d) => d.toString(2).replaceAll("0", "").length);
      const p50 = quantile(lateness, 0.5);
      const p99 = quantile(lateness, 0.99);
      console.log(
        `delayed-accuracy: ${count} jobs, delays ${Math.min(...delays)}-${Math.max(...delays)} ms (${Math.min(...hops)}-${Math.max(...hops)} levels each), ` +
          `start after due time: min ${lateness[0]} ms, p50 ${p50} ms, p99 ${p99} ms, max ${lateness.at(-1)} ms`,
      );
      // Never early (a few ms of slack for the broker's clock ticks), and within 1 s at p99.
      expect(lateness[0]).toBeGreaterThanOrEqual(-5);
      expect(p99).toBeLessThan(1000);
    } finally {
      await client.close();
      await dispatcher.close();
      await pool.close();
      await events.close();
      await queue.close();
      await connection.close();
    }
  });
});
