/**
 * Starts private RabbitMQ nodes for local experiments and fault drills, beside (never touching)
 * the machine's broker, prints their URLs and the commands to hurt them, and stops them on Ctrl-C.
 *
 *   npm run rabbitmq:nodes                 # one node
 *   npm run rabbitmq:nodes -- --nodes 3    # a three-node cluster
 *
 * The same helper tests use: `RabbitMqNodes` from `@blacktree/orchestrator/testing`.
 */
import { parseArgs } from "node:util";
import { RabbitMqNodes } from "../src/testing/broker/rabbitmq-nodes.ts";

const { values } = parseArgs({ options: { nodes: { type: "string", default: "1" }, dir: { type: "string" } } });
const started = Date.now();
console.log(`starting ${values.nodes} private RabbitMQ node(s)…`);
const brokers = await RabbitMqNodes.start({ nodes: Number(values.nodes), ...(values.dir ? { dir: values.dir } : {}) });
console.log(`up in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
for (const node of brokers.nodes) console.log(`  ${node.index}  ${node.name}  ${node.url}  pid ${node.pid}`);
console.log(`\nAmqpConnection url: ${JSON.stringify(brokers.urls)}`);
console.log("kill -9 <pid> (a node crash), kill -STOP / -CONT <pid> (freeze / thaw); Ctrl-C stops them all.");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping…");
  await brokers.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
setInterval(() => {}, 60_000);
