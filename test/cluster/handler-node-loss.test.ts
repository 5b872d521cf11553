import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Dispatcher, InProcessTransport, JobClient, WorkerPool } from "../../src/index.ts";
import { AmqpConnection, AmqpEvents, AmqpQueue } from "../../src/queue/amqp/index.ts";
import { RabbitMqNodes } from "../../src/testing/index.ts";
import type { JobContext } from "../../src/worker/index.ts";

// A user's handler, tested against the loss of the broker node its orchestrator is connected to.
describe.skipIf(!RabbitMqNodes.available())("my deploy handler on a three-node RabbitMQ cluster", () => {
  let brokers: RabbitMqNodes;
  beforeAll(async () => {
    brokers = await RabbitMqNodes.start({ nodes: 3 }); // 10-40 s: once per file
  }, 300_000);
  afterAll(() => brokers?.close());

  it("finishes every deploy when the orchestrator's broker node dies, never letting an older attempt overwrite a newer one", { timeout: 120_000 }, async () => {
    // The external system the handler writes to: it keeps the largest fencing token it has seen.
    const deployed = new Map<string, { token: number; by: number }>();
    const deploy = async (payload: { app: string }, ctx: JobContext) => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const current = deployed.get(payload.app);
      if (current && current.token > ctx.fencingToken) return "superseded"; // a newer attempt wrote
      deployed.set(payload.app, { token: ctx.fencingToken, by: ctx.attempt });
      return "deployed";
    };
    const [n0, n1, n2] = brokers.urls as [string, string, string];
    const queueName = `deploys-${Date.now()}`;
    // The orchestrator starts on node 1, the producer on node 0; each lists every node.
    const orchestrator = new AmqpConnection({ url: [n1, n2, n0], heartbeatSec: 2 });
    const producer = new AmqpConnection({ url: [n0, n1, n2], heartbeatSec: 2 });
    const pool = new WorkerPool();
    pool.add({ id: "w1", slots: 4, transport: new InProcessTransport({ handlers: { deploy }, slots: 4 }) });
    const queue = new AmqpQueue({ connection: orchestrator, queueName });
    const events = new AmqpEvents({ connection: orchestrator, queueName });
    const dispatcher = new Dispatcher({ queue, events, pool });
    await dispatcher.start();
    const client = new JobClient<{ deploy: { payload: { app: string }; result: string } }>({
      queue: new AmqpQueue({ connection: producer, queueName }),
      events: new AmqpEvents({ connection: producer, queueName }),
    });

    const apps = Array.from({ length: 20 }, (_, i) => `app-${i}`);
    const handles = await Promise.all(apps.map((app) => client.submit({ type: "deploy", payload: { app } })));
    await new Promise((resolve) => setTimeout(resolve, 300)); // some deploys are running…
    await brokers.kill(1); // …when the orchestrator's node dies (kill -9)

    const results = await Promise.all(handles.map((handle) => handle.result()));
    expect(results.every((r) => r === "deployed" || r === "superseded")).toBe(true);
    expect([...deployed.keys()].sort()).toEqual([...apps].sort());
    expect(orchestrator.node?.index).not.toBe(0); // it moved on from node 1 (index 0 of its list)

    await dispatcher.close();
    await client.close();
    await Promise.all([orchestrator.close(), producer.close()]);
    await brokers.restart(1); // rejoins the cluster on its data
  });
});
