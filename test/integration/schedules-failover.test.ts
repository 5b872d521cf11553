import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore, PostgresScheduleStore } from "../../src/store/postgres/index.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/grpc-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { startSchedulerProcess, type SchedulerProcess } from "../helpers/scheduler-process.ts";
import { startWorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const SCHEMA = "t_schedules";
const handlersModule = fileURLToPath(new URL("../helpers/schedule-handlers.ts", import.meta.url));

describe.skipIf(!rabbit.available || !postgres.available)("a schedule across two scheduler processes, the leader SIGKILLed", () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
    await postgres.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
    await rabbit.cleanup();
  });

  it("runs every tick of the window exactly once, counted by the worker", async () => {
    const queueName = rabbit.queueName("schedules");
    const file = join(tmpdir(), `test-schedules-${randomUUID()}.log`);
    cleanups.push(async () => rmSync(file, { force: true }));
    // One worker process; one dispatcher here (it is not killed: this test is about the schedulers).
    const worker = await startWorkerProcess({ handlersModule, handlersExport: "scheduleHandlers", slots: 4 });
    cleanups.push(() => worker.stop());
    const connection = new AmqpConnection({ url: rabbit.url, connectionName: "test-schedules-dispatcher" });
    const queue = new AmqpQueue({ connection, queueName });
    const events = new AmqpEvents({ connection, queueName });
    const store = new PostgresJobStore({ connectionString: postgres.url, schema: SCHEMA, poolSize: 2 });
    const schedules = new PostgresScheduleStore({ connectionString: postgres.url, schema: SCHEMA });
    await schedules.migrate();
    const pool = new WorkerPool();
    pool.add({ id: "w0", transport: new GrpcTransport({ address: worker.address }), slots: 4 });
    const dispatcher = new Dispatcher({ queue, events, pool, store });
    dispatcher.on("error", () => {});
    const client = new JobClient({ queue, events, store, schedules });
    cleanups.push(
      () => connection.close(), () => Promise.allSettled([queue.close(), events.close(), store.close(), schedules.close(), pool.close()]),
      () => dispatcher.close({ signal: AbortSignal.timeout(2000) }), () => client.close(),
    );
    cleanups.push(() => rabbit.withChannel((channel) => channel.deleteQueue(`${queueName}.schedules.leader`)));
    await dispatcher.start();

    const config = { amqpUrl: rabbit.url, postgresUrl: postgres.url, schema: SCHEMA, queueName };
    const processes: SchedulerProcess[] = [await startSchedulerProcess(config), await startSchedulerProcess(config)];
    for (const p of processes) cleanups.push(() => p.stop());
    const scheduleId = `kill-${randomUUID()}`;
    const handle = await client.schedules.create({ id: scheduleId, everyMs: 1000, overlap: "allow", missedTicks: "run_all", job: { type: "tick", payload: { file } } });

    const runs = () => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : []);
    const leaderOf = () => processes.findIndex((p) => p.lines().filter((l) => l === "leading" || l === "following").at(-1) === "leading");
    await waitFor(() => leaderOf() >= 0 && runs().length >= 3, { timeoutMs: 20_000 });
    const leader = leaderOf();
    const survivor = processes[1 - leader] as SchedulerProcess;
    // Kill it a few milliseconds after a tick is due: while it decides, records and queues that tick.
    const nextTick = Math.ceil(Date.now() / 1000) * 1000;
    await new Promise((resolve) => setTimeout(resolve, nextTick - Date.now() + Math.floor(Math.random() * 12)));
    const killedAt = Date.now();
    processes[leader]?.kill("SIGKILL");
    await processes[leader]?.exited;
    const before = runs().length;
    await waitFor(() => survivor.lines().includes("leading") && runs().length >= before + 3, { timeoutMs: 20_000 });
    await handle.pause();
    // Every job the schedule fired has finished.
    await waitFor(async () => {
      const page = await client.list({ schedule: scheduleId, state: ["queued", "running", "retrying", "unschedulable"] });
      return page.records.length === 0;
    }, { timeoutMs: 20_000 });

    const lines = runs();
    const ids = lines.map((line) => line.split(" ")[0] as string);
    expect(new Set(ids).size, `a tick ran twice:\n${lines.join("\n")}`).toBe(ids.length);
    expect(lines.every((line) => line.endsWith(" 1")), "every run is a first attempt").toBe(true);
    const ticks = ids.map((id) => Number(id.split(":").at(-1))).sort((a, b) => a - b);
    const first = ticks[0] as number;
    expect(ticks, "no gap between the first and the last tick").toEqual(ticks.map((_, i) => first + i * 1000));
    expect(ticks.length).toBeGreaterThanOrEqual(6);
    // What the worker ran is what the schedule fired: each fired job has a record, each record ran.
    const recorded = (await client.list({ schedule: scheduleId, limit: 1000 })).records;
    expect(recorded.map((r) => r.id).sort()).toEqual([...ids].sort());
    expect(recorded.every((r) => r.state === "completed" && r.attempts.length === 1)).toBe(true);
    // For the record: which ticks the survivor fired that were due before it led (caught up, or re-queued from the outbox).
    const survivorFired = survivor.lines().filter((l) => l.startsWith("fired ")).map((l) => Number(l.split(":").at(-1)));
    console.log(`schedules-failover: ${ticks.length} ticks, leader killed ${killedAt - nextTick} ms after tick ${nextTick}; ` +
      `the survivor fired ${survivorFired.filter((t) => t <= killedAt).length} tick(s) due before the kill: ${survivorFired.filter((t) => t <= killedAt).join(", ")}`);
    const info = await handle.describe();
    expect(info.fired).toBe(ticks.length);
    expect(info.pending).toEqual([]);
  });
});
