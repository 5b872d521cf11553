import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { LeaderTerm } from "../../src/queue/leadership.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpLeadership } from "../../src/queue/amqp/amqp-leadership.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

describe.skipIf(!rabbit.available)("AmqpLeadership on RabbitMQ", () => {
  const closers: Array<() => Promise<unknown>> = [];
  const electionQueues: string[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => {});
    await rabbit.withChannel(async (channel) => {
      for (const queue of electionQueues.splice(0)) await channel.deleteQueue(queue);
    });
  });
  afterAll(() => rabbit.cleanup());

  /** `n` candidates, each on its own connection as separate processes would be; a log of term starts and ends in order. */
  async function candidates(n: number, options: { renewIntervalMs?: number } = {}) {
    const queueName = rabbit.queueName("schedules-leader");
    const log: string[] = [];
    const active = new Set<number>();
    let overlaps = 0;
    const elections = Array.from({ length: n }, (_, i) => {
      const connection = new AmqpConnection({ url: rabbit.url, heartbeatSec: 2, connectionName: `test-schedules-leader-${i}` });
      const leadership = new AmqpLeadership({ connection, queueName, ...options });
      leadership.on("error", ({ error }) => log.push(`error ${i} ${error.message}`));
      closers.push(() => connection.close(), () => leadership.close());
      return { connection, leadership };
    });
    electionQueues.push(elections[0]?.leadership.queueOf("schedules") as string);
    const onTerm = (i: number) => (term: LeaderTerm) => {
      if (active.size > 0) overlaps++;
      active.add(i);
      log.push(`lead ${i}`);
      term.signal.addEventListener("abort", () => {
        active.delete(i);
        log.push(`end ${i}`);
      });
    };
    // Joined at once, on a queue that does not exist yet: every one seeds a token.
    const candidacies = await Promise.all(elections.map((e, i) => e.leadership.campaign("schedules", onTerm(i))));
    return { queue: elections[0]?.leadership.queueOf("schedules") as string, elections, candidacies, log, active, overlaps: () => overlaps };
  }

  it("elects exactly one leader among candidates joining at once, and drops the extra tokens they seeded", async () => {
    const { queue, candidacies, active, overlaps, log } = await candidates(3);
    await waitFor(() => active.size === 1);
    // Every extra token was delivered to the leader and dropped: none left ready.
    await waitFor(async () => (await rabbit.messageCount(queue)) === 0);
    expect(candidacies.filter((c) => c.term !== undefined)).toHaveLength(1);
    expect(overlaps()).toBe(0);
    // Declaring one new quorum queue from three channels at once may close a channel; its candidate
    // opens another and joins (campaign() resolved for all three: each consumes).
    for (const error of log.filter((l) => l.startsWith("error"))) expect(error).toMatch(/unavailable\] opening the leader election/);
  });

  it("hands over when the leader resigns or its connection dies, one leader at a time", async () => {
    const { elections, candidacies, active, overlaps, log } = await candidates(3);
    await waitFor(() => active.size === 1);
    const first = [...active][0] as number;
    await candidacies[first]?.resign();
    await waitFor(() => active.size === 1 && !active.has(first));
    const second = [...active][0] as number;
    // A dead connection (as a killed process): the broker returns the token to the queue.
    await elections[second]?.connection.close();
    await waitFor(() => active.size === 1 && !active.has(second));
    const third = [...active][0] as number;
    expect(new Set([first, second, third]).size).toBe(3);
    expect(log.filter((l) => !l.startsWith("error "))).toEqual([`lead ${first}`, `end ${first}`, `lead ${second}`, `end ${second}`, `lead ${third}`]);
    expect(overlaps()).toBe(0);
  });

  it("keeps leading across token renewals, and leaves no token waiting in the queue", async () => {
    const { queue, active, log } = await candidates(2, { renewIntervalMs: 100 });
    await waitFor(() => active.size === 1);
    const leader = [...active][0];
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect([...active]).toEqual([leader]);
    expect(log.filter((l) => !l.startsWith("error "))).toEqual([`lead ${leader}`]);
    // A renewed token is ready for an instant before the leader takes it and drops the old one.
    await waitFor(async () => (await rabbit.messageCount(queue)) === 0);
  });
});
