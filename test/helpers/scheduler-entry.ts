/**
 * Entry script of a scheduler process for the schedule integration tests:
 * `node scheduler-entry.ts '<json config>'` composes AmqpConnection → AmqpQueue/AmqpEvents,
 * PostgresJobStore/PostgresScheduleStore and a Scheduler behind AmqpLeadership as an
 * orchestrator would, prints `ready` once it joined the election, `leading` / `following` as its
 * terms begin and end, and `fired <jobId>` for each tick it queued.
 */
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpLeadership } from "../../src/queue/amqp/amqp-leadership.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { Scheduler } from "../../src/schedule/scheduler.ts";
import { PostgresJobStore, PostgresScheduleStore } from "../../src/store/postgres/index.ts";

interface EntryConfig {
  amqpUrl: string;
  postgresUrl: string;
  schema: string;
  queueName: string;
}

const config = JSON.parse(process.argv[2] ?? "{}") as EntryConfig;
const connection = new AmqpConnection({ url: config.amqpUrl, heartbeatSec: 2, reconnect: { baseDelayMs: 100, maxDelayMs: 1000 }, connectionName: `test-scheduler-${process.pid}` });
const queue = new AmqpQueue({ connection, queueName: config.queueName });
const events = new AmqpEvents({ connection, queueName: config.queueName, subscriberExpiresMs: 10_000 });
const store = new PostgresJobStore({ connectionString: config.postgresUrl, schema: config.schema, poolSize: 2 });
const schedules = new PostgresScheduleStore({ connectionString: config.postgresUrl, schema: config.schema });
const leadership = new AmqpLeadership({ connection, queueName: config.queueName });
const scheduler = new Scheduler({ queue, events, store, schedules, leadership, refreshIntervalMs: 200 });
const report = ({ error }: { error: Error }) => process.stderr.write(`error ${error.message}\n`);
scheduler.on("error", report);
leadership.on("error", report);
queue.on("error", report);
events.on("error", report);
connection.on("error", report);
scheduler.on("leading", () => process.stdout.write("leading\n"));
scheduler.on("following", () => process.stdout.write("following\n"));
scheduler.on("tickFired", ({ jobId }) => process.stdout.write(`fired ${jobId}\n`));
await scheduler.start();
process.stdout.write("ready\n");
process.once("SIGTERM", () => {
  void (async () => {
    await scheduler.close().catch(() => {});
    await Promise.allSettled([leadership.close(), queue.close(), events.close(), store.close(), schedules.close()]);
    await connection.close();
    process.exit(0);
  })();
});
