import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "../../src/testing/wait-for.ts";
import type { RoleConfig, SpanRecord } from "../helpers/otel-role.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();
const entry = fileURLToPath(new URL("../helpers/otel-role.ts", import.meta.url));
const CONSUMER = 4;
const PRODUCER = 3;
const CLIENT = 2;
const SERVER = 1;

/** One role process; `next(prefix)` resolves with the rest of the next stdout line starting with it. */
function startRole(config: RoleConfig) {
  const child: ChildProcess = spawn(process.execPath, ["--no-warnings", entry, JSON.stringify(config)], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line);
    for (const wake of waiters.splice(0)) wake();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    exited,
    send: (line: string) => child.stdin?.write(`${line}\n`),
    async next(prefix: string, timeoutMs = 30_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const index = lines.findIndex((line) => line.startsWith(prefix));
        if (index >= 0) return (lines.splice(index, 1)[0] as string).slice(prefix.length).trim();
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no "${prefix}" line from ${config.role} (exit ${child.exitCode}):\n${stderr}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

function readSpans(...files: string[]): SpanRecord[] {
  return files.flatMap((file) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line) as SpanRecord) : []));
}

describe.skipIf(!rabbit.available)("telemetry across a producer, an orchestrator and a worker process on RabbitMQ", () => {
  const dir = mkdtempSync(join(tmpdir(), "blacktree-telemetry-"));
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await rabbit.cleanup();
  });

  for (const instrument of [false, true]) {
    it(`makes one trace per job (send -> process -> execute -> handle -> the handler's span)${instrument ? " with instrumentation-amqplib and instrumentation-grpc registered" : ""}, shows both attempts of a retried job and the cancel of a cancelled one, and counts them`, async () => {
      const queueName = rabbit.queueName(`telemetry${instrument ? "-instrumented" : ""}`);
      const files = { worker: join(dir, `worker-${instrument}.jsonl`), orchestrator: join(dir, `orchestrator-${instrument}.jsonl`), producer: join(dir, `producer-${instrument}.jsonl`) };
      const worker = startRole({ role: "worker", spansFile: files.worker, instrument });
      const orchestrator = startRole({ role: "orchestrator", spansFile: files.orchestrator, instrument, url: rabbit.url, queueName, workerAddress: `127.0.0.1:${await worker.next("ready")}` });
      try {
        await orchestrator.next("ready");
        const producer = startRole({ role: "producer", spansFile: files.producer, instrument, url: rabbit.url, queueName });
        const ids = JSON.parse(await producer.next("ids", 60_000)) as { ok: string; retry: string; cancel: string };
        expect(await producer.exited).toBe(0);

        const all = () => readSpans(files.producer, files.orchestrator, files.worker);
        const ours = (id: string) => all().filter((s) => s.attributes["messaging.message.id"] === id);
        // Every span of the three jobs has ended (the process spans end after the settle).
        await waitFor(() => ours(ids.ok).length === 4 && ours(ids.retry).length === 7 && ours(ids.cancel).length === 4, { timeoutMs: 20_000 });
        await waitFor(() => all().some((s) => s.name === "user work"), { timeoutMs: 5000 });
        const spans = all();
        const byId = new Map(spans.map((s) => [s.spanId, s]));
        const one = (name: string, id: string, attempt?: number) => {
          const found = spans.filter((s) => s.name === name && s.attributes["messaging.message.id"] === id && (attempt === undefined || s.attributes["blacktree.job.attempt"] === attempt));
          expect(found, `${name} of ${id}`).toHaveLength(1);
          return found[0] as SpanRecord;
        };

        // The job that completes: one trace from the producer's request to the handler's own span.
        const request = spans.find((s) => s.name === "POST /builds") as SpanRecord;
        const send = one(`send ${queueName}`, ids.ok);
        const process = one(`process ${queueName}`, ids.ok);
        const execute = one("execute traced", ids.ok);
        const handle = one("handle traced", ids.ok);
        const userWork = spans.find((s) => s.name === "user work") as SpanRecord;
        expect([send.role, process.role, execute.role, handle.role, userWork.role]).toEqual(["producer", "orchestrator", "orchestrator", "worker", "worker"]);
        expect(send).toMatchObject({ kind: PRODUCER, parentSpanId: request.spanId, traceId: request.traceId });
        expect(send.attributes).toMatchObject({ "messaging.system.name": "rabbitmq", "messaging.operation.type": "send", "messaging.destination.name": queueName, "blacktree.job.type": "traced" });
        expect(process).toMatchObject({ kind: CONSUMER, traceId: request.traceId });
        expect(process.attributes).toMatchObject({ "messaging.operation.type": "process", "messaging.destination.name": queueName, "blacktree.job.attempt": 1, "blacktree.worker.id": "otel-worker", "blacktree.job.outcome": "completed" });
        if (instrument) {
          // An AMQP consume span is active when the delivery arrives: it is the parent, the creation context a link.
          expect(byId.get(process.parentSpanId as string)?.scope).toMatch(/amqplib/);
          expect(process.links).toContainEqual({ traceId: send.traceId, spanId: send.spanId });
        } else {
          expect(process.parentSpanId).toBe(send.spanId);
        }
        expect(execute).toMatchObject({ kind: CLIENT, parentSpanId: process.spanId, traceId: request.traceId });
        expect(handle).toMatchObject({ kind: SERVER, parentSpanId: execute.spanId, traceId: request.traceId });
        expect(userWork).toMatchObject({ parentSpanId: handle.spanId, traceId: request.traceId });
        // Connected: every span of the trace but the root has its parent in the trace.
        const trace = spans.filter((s) => s.traceId === request.traceId);
        for (const span of trace) if (span !== request) expect(byId.has(span.parentSpanId as string), `parent of ${span.name} (${span.scope})`).toBe(true);
        if (instrument) expect(trace.some((s) => /amqplib/.test(s.scope))).toBe(true);
        // The long-lived session stream and the health checks add no span to a job's trace.
        expect(trace.filter((s) => /grpc/.test(s.scope))).toEqual([]);

        // The retried job: both attempts in the producer's trace, the first with its retry.
        const retrySend = one(`send ${queueName}`, ids.retry);
        const first = one(`process ${queueName}`, ids.retry, 1);
        const second = one(`process ${queueName}`, ids.retry, 2);
        for (const span of [first, second]) expect(span.traceId).toBe(retrySend.traceId);
        expect(first.attributes["blacktree.job.outcome"]).toBe("retried");
        expect(first.events.map((e) => e.name)).toContain("blacktree.job.retry");
        expect(first.events.find((e) => e.name === "blacktree.job.retry")?.attributes["error.type"]).toBe("handler_failed");
        expect(second.attributes["blacktree.job.outcome"]).toBe("completed");
        const failedHandle = one("handle flaky", ids.retry, 1);
        expect(failedHandle.status).toBe(2);
        expect(failedHandle.parentSpanId).toBe(one("execute flaky", ids.retry, 1).spanId);
        expect(one("handle flaky", ids.retry, 2).parentSpanId).toBe(one("execute flaky", ids.retry, 2).spanId);

        // The cancelled job: the cancel shows on the dispatcher's spans and on the worker's.
        const cancelProcess = one(`process ${queueName}`, ids.cancel);
        expect(cancelProcess.attributes["blacktree.job.outcome"]).toBe("cancelled");
        expect(cancelProcess.events.map((e) => e.name)).toContain("blacktree.job.cancel");
        expect(one("execute slow", ids.cancel).events.map((e) => e.name)).toContain("blacktree.job.cancel");
        expect(one("handle slow", ids.cancel).events.find((e) => e.name === "blacktree.job.cancel")?.attributes["blacktree.cancel.reason"]).toBe("requested");
        expect(cancelProcess.traceId).toBe(one(`send ${queueName}`, ids.cancel).traceId);

        // Metrics of the orchestrator through an in-memory reader, and the same in Prometheus text.
        orchestrator.send("metrics");
        const { points, prometheus } = JSON.parse(await orchestrator.next("metrics")) as {
          points: Array<{ name: string; attributes: Record<string, unknown>; value: number | { count: number; sum: number } }>;
          prometheus: string;
        };
        const sum = (name: string, match: Record<string, unknown> = {}) =>
          points
            .filter((p) => p.name === name && Object.entries(match).every(([k, v]) => p.attributes[k] === v))
            .reduce((total, p) => total + (typeof p.value === "number" ? p.value : p.value.count), 0);
        expect(sum("messaging.client.consumed.messages", { "messaging.operation.name": "process" })).toBe(4);
        // The orchestrator's AmqpEvents (global meter provider) counts the cancel it received.
        expect(sum("messaging.client.consumed.messages", { "messaging.destination.name": `${queueName}.cancels`, "messaging.operation.name": "receive" })).toBe(1);
        expect(sum("messaging.process.duration")).toBe(4);
        expect(sum("messaging.process.duration", { "blacktree.job.outcome": "retried" })).toBe(1);
        expect(sum("blacktree.job.duration", { "blacktree.job.type": "traced", "blacktree.job.outcome": "completed" })).toBe(1);
        expect(sum("blacktree.job.duration", { "blacktree.job.type": "flaky", "blacktree.job.outcome": "handler_failed" })).toBe(1);
        expect(sum("blacktree.job.duration", { "blacktree.job.type": "flaky", "blacktree.job.outcome": "completed" })).toBe(1);
        expect(sum("blacktree.job.duration", { "blacktree.job.type": "slow", "blacktree.job.outcome": "canceled" })).toBe(1);
        expect(sum("blacktree.job.retries", { "blacktree.job.type": "flaky", "error.type": "handler_failed" })).toBe(1);
        expect(sum("blacktree.job.queue_wait")).toBe(3);
        expect(sum("blacktree.job.cancel_latency", { "blacktree.job.type": "slow" })).toBe(1);
        expect(sum("blacktree.jobs.active")).toBe(0);
        expect(sum("blacktree.job.dead_letters")).toBe(0);
        expect(sum("blacktree.health_check.duration", { "blacktree.health.outcome": "serving" })).toBeGreaterThan(0);
        expect(sum("blacktree.worker.slots", { "blacktree.slot.state": "free" })).toBe(4);
        expect(sum("blacktree.workers", { "blacktree.worker.state": "idle" })).toBe(1);
        expect(points.some((p) => /job\.id|message\.id/.test(Object.keys(p.attributes).join()))).toBe(false);
        expect(prometheus).toContain('blacktree_job_retries_total{blacktree_job_type="flaky",error_type="handler_failed"} 1');
        expect(prometheus).toContain('blacktree_job_duration_seconds_count{blacktree_job_outcome="completed",blacktree_job_type="traced"} 1');
        expect(prometheus).toMatch(/messaging_client_consumed_messages_total\{[^}]*\} 4/);
      } finally {
        orchestrator.send("close");
        await Promise.race([orchestrator.exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
        await orchestrator.stop();
        await worker.stop();
      }
    });
  }
});
