/**
 * Does the broker keep every publish it confirmed across a kill -9 of the queue's leader node?
 * The product is not involved: plain amqplib against a private three-node RabbitMQ cluster.
 *
 *   node --no-warnings bench/chaos/broker-confirms.ts [rounds=4] [out.json]
 *
 * One quorum queue with the job queue's arguments. Each round: a publisher connects to the node
 * leading the queue (its URL list starting there), publishes a message every 25 ms on a confirm
 * channel (a new id each time, and a nacked or unconfirmed one again 200 ms later), a consumer on
 * another node acks everything it gets. 3 s in, the leader node is killed (kill -9); the publisher
 * reconnects to the next node and goes on; 9 s later the node restarts on its data and rejoins.
 * After the round the queue is drained. A message confirmed (basic.ack) and never consumed is lost.
 * With FREEZE_FIRST=1 another node is frozen for 4 s first, as in the chaos run.
 * Prints one JSON line per round and writes the summary to `out.json` (optional).
 */
import { writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel } from "amqplib";
import { RabbitMqNodes } from "../../src/testing/broker/rabbitmq-nodes.ts";
import { jobQueueArguments, resolveTopologyNames } from "../../src/queue/amqp/topology.ts";

const rounds = Number(process.argv[2] ?? 4);
const out = process.argv[3];
const QUEUE = "confirm-check";

const nodes = await RabbitMqNodes.start({ nodes: 3 });
process.on("exit", () => void nodes.close());
const names = resolveTopologyNames(QUEUE, undefined);

/** Connects to the first URL of `urls` that answers. */
async function connect(urls: string[]): Promise<ChannelModel> {
  for (;;) {
    for (const url of urls) {
      try {
        return await amqp.connect(url, { timeout: 2000 });
      } catch {
        // next one
      }
    }
    await sleep(100);
  }
}

{
  const setup = await amqp.connect(nodes.urls[0]!);
  const ch = await setup.createChannel();
  await ch.assertQueue(names.deadLetters, { durable: true, arguments: { "x-queue-type": "classic" } });
  await ch.assertQueue(QUEUE, { durable: true, arguments: jobQueueArguments(names, 20) });
  await setup.close();
}

const results: Array<Record<string, unknown>> = [];
for (let round = 0; round < rounds; round++) {
  const leader = (await nodes.queueLeader(QUEUE)) ?? 0;
  const order = [0, 1, 2].map((i) => (leader + i) % 3);
  const consumerNode = order[2]!;
  const consumed = new Set<string>();
  const confirmed = new Set<string>();
  let nacked = 0;
  let unknown = 0;
  let reconnects = 0;

  const consumerConnection = await amqp.connect(nodes.urls[consumerNode]!);
  consumerConnection.on("error", () => {});
  const consumerChannel: Channel = await consumerConnection.createChannel();
  await consumerChannel.prefetch(50);
  await consumerChannel.consume(QUEUE, (m) => {
    if (!m) return;
    consumed.add(m.content.toString());
    consumerChannel.ack(m);
  });

  let stop = false;
  let seq = 0;
  const retry: string[] = [];
  const publisher = (async () => {
    while (!stop) {
      const connection = await connect(order.map((i) => nodes.urls[i]!));
      connection.on("error", () => {});
      let channel: ConfirmChannel;
      try {
        channel = await connection.createConfirmChannel();
      } catch {
        reconnects++;
        continue;
      }
      channel.on("error", () => {});
      let open = true;
      channel.on("close", () => (open = false));
      // As a producer does: a message refused or left unconfirmed is sent again (same id) 200 ms
      // later, beside the new ones.
      const send = (id: string): void => {
        if (stop || !open) {
          retry.push(id);
          return;
        }
        try {
          channel.publish("", QUEUE, Buffer.from(id), { persistent: true, mandatory: true, contentType: "application/json", messageId: id }, (error: unknown) => {
            if (error === null || error === undefined) confirmed.add(id);
            else {
              if (/closed/i.test(String((error as Error).message))) unknown++;
              else nacked++;
              setTimeout(() => send(id), 200);
            }
          });
        } catch {
          retry.push(id);
        }
      };
      for (const id of retry.splice(0)) send(id);
      while (!stop && open) {
        send(`r${round}-${seq++}`);
        await sleep(Number(process.env.PUBLISH_GAP_MS ?? 25));
      }
      reconnects++;
      await connection.close().catch(() => {});
    }
  })();

  if (process.env.FREEZE_FIRST === "1") {
    // As the chaos run does: another node frozen (SIGSTOP) for 4 s, 12 s before the kill.
    await sleep(1000);
    const other = order[1]!;
    nodes.freeze(other);
    await sleep(4000);
    nodes.thaw(other);
    await sleep(8000);
  } else {
    await sleep(3000);
  }
  await nodes.kill(leader);
  const killedAt = Date.now();
  await sleep(9000);
  await nodes.restart(leader);
  await sleep(3000);
  stop = true;
  await publisher;
  // Drain: wait until nothing new arrives for 3 s.
  let last = -1;
  while (consumed.size !== last) {
    last = consumed.size;
    await sleep(3000);
  }
  await consumerConnection.close().catch(() => {});
  const lost = [...confirmed].filter((id) => !consumed.has(id));
  const row = { round, leader: `n${leader}`, published: seq, confirmed: confirmed.size, nacked, unknown, consumed: consumed.size, lost: lost.length, lost_ids: lost.slice(0, 20), reconnects, down_s: (Date.now() - killedAt) / 1000 };
  console.log(JSON.stringify(row));
  results.push(row);
}
const summary = { rabbitmq: "private 3-node cluster", rounds: results, lost: results.reduce((n, r) => n + (r.lost as number), 0) };
if (out) writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
console.log(`lost ${summary.lost} confirmed message(s) in ${rounds} round(s)`);
await nodes.close();
process.exit(0);
