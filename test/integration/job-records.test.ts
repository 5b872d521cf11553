import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { JobResultEvent } from "../../src/job/types.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import type { JobRecord } from "../../src/store/types.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";
import { startWorkerProcess, type WorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const entry = fileURLToPath(new URL("../helpers/records-role.ts", import.meta.url));

/** One role process: its stdout lines, its exit. */
interface Role {
  lines: string[];
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

const live = new Set<ChildProcess>();

function role(name: string, config: Record<string, unknown>): Role {
  const child = spawn(process.execPath, ["--no-warnings", entry, name, JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  const lines: string[] = [];
  let output = "";
  let partial = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
    partial += chunk.toString();
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  });
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  return { lines, output: () => output, exited, kill: (signal) => child.kill(signal) };
}

/** Runs a role to its end and returns its stdout lines; fails with its output when it does not exit 0. */
async function runToEnd(name: string, config: Record<string, unknown>): Promise<string[]> {
  const r = role(name, config);
  const { code } = await r.exited;
  if (code !== 0) throw new Error(`${name} exited ${code}:\n${r.output()}`);
  return r.lines;
}

async function startOrchestrator(config: Record<string, unknown>): Promise<Role> {
  const r = role("orchestrator", config);
  await waitFor(() => r.lines.includes("ready"), { timeoutMs: 20_000, what: `orchestrator ready:\n${r.output()}` });
  return r;
}

describe.skipIf(!rabbit.available || !postgres.available)("job records across processes on RabbitMQ and PostgreSQL", () => {
  const workers: WorkerProcess[] = [];
  const stores: PostgresJobStore[] = [];
  afterEach(async () => {
    for (const child of live) child.kill("SIGKILL");
    for (const w of workers.splice(0)) await w.stop();
    for (const s of stores.splice(0)) await s.close();
  });
  afterAll(async () => {
    await rabbit.cleanup();
    await postgres.cleanup();
  });

  async function deployment() {
    const schema = postgres.schemaName();
    const store = new PostgresJobStore({ connectionString: postgres.url, schema });
    stores.push(store);
    await store.migrate();
    const worker = await startWorkerProcess({ slots: 4 });
    workers.push(worker);
    const base = { amqpUrl: rabbit.url, queueName: rabbit.queueName("records"), postgresUrl: postgres.url, schema };
    return { store, worker, base };
  }

  /** Every result event published for the deployment's jobs, in order. */
  async function followResults(base: { amqpUrl: string; queueName: string }) {
    const connection = new AmqpConnection({ url: base.amqpUrl });
    const events = new AmqpEvents({ connection, queueName: base.queueName, subscriberExpiresMs: 10_000 });
    const results: JobResultEvent[] = [];
    const subscription = await events.subscribe("*", (event) => {
      if (event.kind === "result") results.push(event);
    });
    return {
      results,
      close: async () => {
        await subscription.close();
        await events.close();
        await connection.close();
      },
    };
  }

  it("a producer submits and exits, an orchestrator runs the job, a process started afterwards gets completed, the result and the attempts", async () => {
    const { store, worker, base } = await deployment();
    const [submitted] = await runToEnd("producer", { ...base, jobs: [{ type: "echo", payload: { hello: "records" } }] });
    const id = submitted?.split(" ")[1] as string;
    expect((await store.get(id))?.state).toBe("queued");
    const orchestrator = await startOrchestrator({ ...base, workers: [worker.address] });
    await waitFor(async () => (await store.get(id))?.state === "completed", { timeoutMs: 20_000, what: "the job completed" });
    orchestrator.kill("SIGTERM");
    await orchestrator.exited;
    const [line] = await runToEnd("reader", { ...base, ids: [id] });
    const read = JSON.parse(line as string) as { state: string; result: unknown; attempts: JobRecord["attempts"] };
    expect(read.state).toBe("completed");
    expect(read.result).toEqual({ hello: "records" });
    expect(read.attempts).toMatchObject([{ number: 1, round: 0, workerId: "w0", outcome: "completed" }]);
    expect(read.attempts[0]?.dispatcherId).toMatch(/^orchestrator-\d+$/);
  });

  it("two producer processes with one idempotency key give one job", async () => {
    const { store, base } = await deployment();
    const key = `order-${Date.now()}`;
    const [a, b] = await Promise.all([
      runToEnd("producer", { ...base, jobs: [{ type: "echo", payload: 1, idempotencyKey: key }] }),
      runToEnd("producer", { ...base, jobs: [{ type: "echo", payload: 2, idempotencyKey: key }] }),
    ]);
    expect(a[0]).toBe(b[0]);
    expect((await store.list({ type: "echo" })).records).toHaveLength(1);
    expect(await rabbit.messageCount(base.queueName)).toBe(1);
  });

  it("a job of a type no worker serves is unschedulable with the reason, and fails at its start timeout", async () => {
    const { store, worker, base } = await deployment();
    await startOrchestrator({ ...base, workers: [worker.address] });
    const [submitted] = await runToEnd("producer", { ...base, jobs: [{ type: "transcode", payload: null, startTimeoutMs: 3000 }] });
    const id = submitted?.split(" ")[1] as string;
    const unschedulable = await waitFor(async () => {
      const r = await store.get(id);
      return r?.state === "unschedulable" && r;
    }, { timeoutMs: 20_000, what: "the job unschedulable" });
    expect(unschedulable.reason).toBe("no worker serves job type `transcode`");
    const [line] = await runToEnd("reader", { ...base, ids: [id], await: true });
    const read = JSON.parse(line as string) as { state: string; error: { code: string; details: Record<string, unknown> } };
    expect(read.state).toBe("failed");
    expect(read.error.code).toBe("deadline_exceeded");
    expect(read.error.details).toMatchObject({ reason: "start_timeout", startTimeoutMs: 3000, unschedulable: "no worker serves job type `transcode`" });
  });

  it("dead letters: another process lists one with its reason and redrives it; it runs again from attempt 1 with its history kept", async () => {
    const { store, worker, base } = await deployment();
    await startOrchestrator({ ...base, workers: [worker.address] });
    const [submitted] = await runToEnd("producer", { ...base, jobs: [{ type: "failNonRetryable", payload: { message: "bad input" }, maxAttempts: 3 }] });
    const id = submitted?.split(" ")[1] as string;
    await waitFor(async () => (await store.get(id))?.deadLetter !== undefined, { timeoutMs: 20_000, what: "the job dead-lettered" });
    const lines = await runToEnd("redriver", { ...base, ids: [id] });
    expect(lines).toContain(`redriven ${id}`);
    expect(lines.find((l) => l.startsWith(`dead ${id} `))).toContain("bad input (attempt 1 of 3)");
    const again = await waitFor(async () => {
      const r = await store.get(id);
      return r?.redrives === 1 && r.deadLetter !== undefined && r;
    }, { timeoutMs: 20_000, what: "the redriven job dead-lettered again" });
    expect(again.attempts.map((a) => [a.round, a.number, a.outcome])).toEqual([
      [0, 1, "failed"],
      [1, 1, "failed"],
    ]);
    expect(again.attempts[1]?.fencingToken).toBeGreaterThan(again.attempts[0]?.fencingToken ?? Infinity);
  });

  it("an orchestrator SIGKILLed between the store write and the ack: the next one publishes the recorded outcome and acks, without running the job again", async () => {
    const { store, worker, base } = await deployment();
    const follower = await followResults(base);
    try {
      const first = await startOrchestrator({ ...base, workers: [worker.address], killAfterRecord: true });
      const [submitted] = await runToEnd("producer", { ...base, jobs: [{ type: "context", payload: null }] });
      const id = submitted?.split(" ")[1] as string;
      const died = await first.exited;
      expect(died.signal).toBe("SIGKILL");
      expect(first.lines).toContain(`recorded ${id}`);
      const recorded = await store.get(id);
      expect(recorded?.state).toBe("completed");
      expect(follower.results).toEqual([]);
      const second = await startOrchestrator({ ...base, workers: [worker.address] });
      const published = await waitFor(() => follower.results.find((e) => e.jobId === id), { timeoutMs: 20_000, what: "the recorded outcome published" });
      expect(published.outcome).toEqual({ status: "completed", result: recorded?.result });
      await waitFor(async () => (await rabbit.messageCount(base.queueName)) === 0 && second.lines.includes("ready"), { timeoutMs: 10_000 });
      // Ran once: the second orchestrator found the record final and did not start the job.
      expect(first.lines.filter((l) => l.startsWith(`started ${id}`))).toHaveLength(1);
      expect(second.lines.filter((l) => l.startsWith(`started ${id}`))).toEqual([]);
      expect(await store.get(id)).toEqual(recorded);
    } finally {
      await follower.close();
    }
  });

  it("the store's connection cut and black-holed mid-run: nothing lost, every record ends matching the published outcome, no stale attempt wins", async () => {
    const { store, worker, base } = await deployment();
    const proxy = await TcpProxy.start({ port: 5432 });
    const follower = await followResults(base);
    try {
      const orchestrator = await startOrchestrator({ ...base, postgresUrl: proxy.url(postgres.url), workers: [worker.address], storeTimeoutMs: 1000 });
      const jobs = Array.from({ length: 6 }, (_, i) => ({ type: "sleep", payload: { ms: 400 + i * 50 }, maxAttempts: 10 }));
      const ids = (await runToEnd("producer", { ...base, jobs })).map((line) => line.split(" ")[1] as string);
      await waitFor(() => ids.every((id) => orchestrator.lines.some((l) => l.startsWith(`started ${id} `))), { timeoutMs: 20_000, what: "every job started" });
      // Mid-run: the store's connections die, then the store stops answering while the jobs end.
      proxy.cut();
      proxy.blackhole();
      await waitFor(() => orchestrator.output().includes("recording the outcome of attempt"), { timeoutMs: 20_000, what: "an outcome the store could not record" });
      proxy.restore();
      const records = await waitFor(async () => {
        const all = await Promise.all(ids.map((id) => store.get(id)));
        return all.every((r) => r?.state === "completed") && (all as JobRecord[]);
      }, { timeoutMs: 40_000, what: `every job completed:\n${orchestrator.output()}` });
      await waitFor(() => ids.every((id) => follower.results.some((e) => e.jobId === id)), { timeoutMs: 20_000, what: "every outcome published" });
      for (const record of records) {
        // A write the store took after the dispatcher gave up on it wins only if no newer attempt
        // wrote since; either way every published outcome is the recorded one.
        for (const published of follower.results.filter((e) => e.jobId === record.id)) {
          expect(published.outcome).toEqual({ status: "completed", result: record.result });
        }
        expect(record.result).toMatchObject({ slept: expect.any(Number) });
        // The attempt that completed is the newest, and the record carries its token.
        const completed = record.attempts.filter((a) => a.outcome === "completed");
        expect(completed).toHaveLength(1);
        expect(record.attempts.at(-1)).toBe(completed[0] ?? record.attempts.at(-1));
        expect(record.fencingToken).toBe(Math.max(...record.attempts.map((a) => a.fencingToken)));
      }
      expect(await rabbit.messageCount(base.queueName)).toBe(0);
    } finally {
      await follower.close();
      await proxy.close();
    }
  });
});
