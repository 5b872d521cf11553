import { afterAll, describe, expect, it } from "vitest";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import type { AmqpNodeInfo } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { redactUrl } from "../../src/queue/amqp/errors.ts";
import { freePort } from "../../src/testing/broker/rabbitmq-node.ts";
import { contractJob } from "../../src/testing/contracts/queue-contract.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { expectAllDone, produce, RECOVERY, watch, work } from "../helpers/amqp-fault-kit.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const rabbit = await useRabbitMq();
const brokerPort = Number(new URL(rabbit.url).port || 5672);

// Two proxies in front of the one shared broker stand for two nodes of a cluster: cutting one is
// losing that node's connections. (Real node losses: test/cluster/.)
describe.skipIf(!rabbit.available)("AmqpConnection with several URLs", () => {
  afterAll(() => rabbit.cleanup());

  it("connects to the first URL that answers and says which node it is on", async () => {
    const dead = `amqp://guest:guest@127.0.0.1:${await freePort()}`;
    await using connection = new AmqpConnection({ url: [dead, rabbit.url], connectTimeoutMs: 2000 });
    const errors: string[] = [];
    connection.on("error", (e) => errors.push(e.error.message));
    const connected = new Promise<AmqpNodeInfo>((resolve) => connection.once("connected", (e) => resolve(e.node)));
    await connection.ready({ timeoutMs: 20_000 });
    expect(connection.node).toEqual({ index: 1, url: redactUrl(rabbit.url) });
    expect(await connected).toEqual(connection.node);
    // The dead node was tried first and reported, without its credentials.
    expect(errors[0]).toContain(`node ${redactUrl(dead)}`);
    expect(errors[0]).not.toContain("guest:guest");
  });

  it("rotates to the next node on every reconnect; consumers and buffered publishes carry over", async () => {
    await using a = await TcpProxy.start({ port: brokerPort });
    await using b = await TcpProxy.start({ port: brokerPort });
    await using queue = new AmqpQueue({ url: [a.url(rabbit.url), b.url(rabbit.url)], queueName: rabbit.queueName("cluster"), heartbeatSec: 2, ...RECOVERY });
    const seen = watch(queue);
    const nodes: number[] = [];
    queue.connection.on("connected", (e) => nodes.push(e.node.index));
    const jobs = Array.from({ length: 300 }, (_, n) => contractJob({ payload: { n } }));
    const { completed } = await work(queue, 8, 20);
    const producing = produce(queue, jobs, 4);
    await waitFor(() => completed.size >= 50, { timeoutMs: 20_000, what: "50 jobs completed" });
    a.cut();
    await waitFor(() => nodes.length >= 2 && completed.size >= 120, { timeoutMs: 20_000, what: "back on node 1, 120 jobs completed" });
    b.cut();
    await producing;
    await expectAllDone(rabbit, queue, jobs, completed);
    // a → b → a: each reconnect started with the node after the one that was lost.
    expect(nodes.slice(0, 3)).toEqual([0, 1, 0]);
    expect(queue.connection.node?.index).toBe(0);
    expect(seen.reconnected).toBeGreaterThanOrEqual(2);
  });
});
