import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { BrokerWorkers } from "../../src/discovery/broker-workers.ts";
import { WorkerDiscovery } from "../../src/discovery/worker-discovery.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import type { DispatcherEvents } from "../../src/dispatcher/types.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import type { WorkerPoolEvents } from "../../src/worker-pool/types.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const handlersModule = fileURLToPath(new URL("../helpers/announce-handlers.mjs", import.meta.url));
const rabbit = await useRabbitMq();
// npx and the installed bin run on this node (24), not whatever `node` is first on PATH.
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, npm_config_update_notifier: "false" };

interface Orchestrator {
  readonly name: string;
  readonly pool: WorkerPool;
  readonly dispatcher: Dispatcher;
  readonly events: Array<[string, unknown]>;
  close(): Promise<void>;
}

/** A worker process started with `npx blacktree-worker` from the installed package. */
interface WorkerCommand {
  readonly child: ChildProcess;
  readonly id: string;
  readonly exited: Promise<number | null>;
  output(): string;
}

// The whole story with processes: the package is packed and installed like a user installs it,
// workers are started with `npx blacktree-worker … --announce`, and two orchestrators (each its
// own pool, discovery, dispatcher and broker connections) find them with no address given.
describe.skipIf(!rabbit.available)("blacktree-worker --announce, found by two orchestrators through the broker", () => {
  let project: string;
  let scratch: string;
  const exchange = `test-workers-announce-${randomUUID()}`;
  const queueName = rabbit.queueName("workers-announce");
  const children = new Set<ChildProcess>();
  const orchestrators: Orchestrator[] = [];
  let client: JobClient;
  let clientQueue: AmqpQueue;
  let clientEvents: AmqpEvents;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "blacktree-announce-"));
    project = join(scratch, "project");
    await run("mkdir", ["-p", project]);
    const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", scratch], { cwd: root, env, timeout: 120_000 });
    const tarball = join(scratch, stdout.trim().split("\n").at(-1) as string);
    await writeFile(join(project, "package.json"), JSON.stringify({ name: "announce-test", version: "1.0.0", private: true }));
    await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", tarball], { cwd: project, env, timeout: 180_000 });

    for (const name of ["A", "B"]) orchestrators.push(await startOrchestrator(name));
    clientQueue = new AmqpQueue({ url: rabbit.url, queueName });
    clientEvents = new AmqpEvents({ url: rabbit.url, queueName });
    client = new JobClient({ queue: clientQueue, events: clientEvents });
  }, 300_000);

  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await client?.close();
    for (const o of orchestrators) await o.close();
    await clientQueue?.close();
    await clientEvents?.close();
    await rabbit.withChannel((channel) => channel.deleteExchange(exchange)).catch(() => {});
    await rabbit.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function startOrchestrator(name: string): Promise<Orchestrator> {
    const queue = new AmqpQueue({ url: rabbit.url, queueName });
    const events = new AmqpEvents({ url: rabbit.url, queueName });
    const pool = new WorkerPool();
    const discovery = new WorkerDiscovery({
      pool,
      sources: [new BrokerWorkers({ url: rabbit.url, exchange })],
      transportFor: (worker) => new GrpcTransport({ address: worker.address, pingIntervalMs: 200, pingTimeoutMs: 600 }),
    });
    const dispatcher = new Dispatcher({ queue, events, pool });
    const seen: Array<[string, unknown]> = [];
    for (const event of ["workerAdded", "workerAdmitted", "workerRemoved"] as const) {
      pool.on(event, (payload: WorkerPoolEvents[typeof event][0]) => seen.push([event, payload.worker.id]));
    }
    for (const event of ["jobStarted", "jobCompleted", "jobRetrying", "jobFailed", "jobDeferred"] as const) {
      dispatcher.on(event, (payload: DispatcherEvents[typeof event][0]) => seen.push([event, { job: payload.job.id, attempt: payload.attempt, ...("workerId" in payload ? { workerId: payload.workerId } : {}) }]));
    }
    await discovery.start();
    await dispatcher.start();
    return {
      name,
      pool,
      dispatcher,
      events: seen,
      async close() {
        await dispatcher.close({ signal: AbortSignal.timeout(5000) });
        await discovery.close();
        await pool.close();
        await queue.close();
        await events.close();
      },
    };
  }

  async function startWorker(id: string): Promise<WorkerCommand> {
    const args = ["--offline", "blacktree-worker", "--handlers", handlersModule, "--id", id, "--port", "0", "--host", "127.0.0.1", "--slots", "2"];
    args.push("--announce", rabbit.url, "--announce-exchange", exchange, "--advertise", "127.0.0.1", "--announce-interval-ms", "300", "--log-format", "json");
    const child = spawn("npx", args, { cwd: project, env, stdio: ["ignore", "pipe", "pipe"], detached: false });
    children.add(child);
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => {
      children.delete(child);
      resolve(code);
    }));
    await waitFor(() => output.includes('"msg":"worker announced"') || child.exitCode !== null, { timeoutMs: 60_000, what: `worker ${id} announced` });
    if (!output.includes('"msg":"worker announced"')) throw new Error(`worker ${id} did not start:\n${output}`);
    return { child, id, exited, output: () => output };
  }

  /** The pid of the node process npx started (npx itself may stay in between). */
  function workerPid(worker: WorkerCommand): number {
    const line = worker.output().split("\n").find((l) => l.includes('"msg":"worker listening"'));
    return JSON.parse(line as string).pid as number;
  }

  const inBothPools = (id: string) => orchestrators.every((o) => ["idle", "busy"].includes(o.pool.get(id)?.state ?? ""));
  const inNoPool = (id: string) => orchestrators.every((o) => o.pool.get(id) === undefined);

  it("is found by both orchestrators with no address given, runs a job, and drains out of both pools on SIGTERM with nothing lost", async () => {
    const worker = await startWorker(`announced-${randomUUID().slice(0, 8)}`);
    await waitFor(() => inBothPools(worker.id), { timeoutMs: 15_000, what: "the worker admitted by both orchestrators" });
    for (const o of orchestrators) expect(o.pool.get(worker.id)).toMatchObject({ slots: 2, jobTypes: ["where", "hold"], description: { workerId: worker.id } });

    const first = await client.submit({ type: "where", payload: {} });
    expect(await first.result({ timeoutMs: 15_000 })).toMatchObject({ attempt: 1 });

    // A job running when the worker is told to stop finishes there; the worker leaves both pools.
    const release = join(scratch, `release-${randomUUID()}`);
    const held = await client.submit({ type: "hold", payload: { release }, timeoutMs: 60_000 });
    await waitFor(() => orchestrators.some((o) => o.events.some(([event, p]) => event === "jobStarted" && (p as { job: string }).job === held.id)), { timeoutMs: 15_000, what: "the held job running" });
    process.kill(workerPid(worker), "SIGTERM");
    // Its goodbye: the pool holding the job lets it finish (draining), the other lets the worker go.
    const leaving = () => orchestrators.every((o) => [undefined, "draining"].includes(o.pool.get(worker.id)?.state));
    await waitFor(() => leaving() && orchestrators.some((o) => o.pool.get(worker.id)?.state === "draining"), { timeoutMs: 10_000, what: "the worker leaving both pools" });
    await writeFile(release, "");
    expect(await held.result({ timeoutMs: 15_000 })).toMatchObject({ attempt: 1 });
    await waitFor(() => inNoPool(worker.id), { timeoutMs: 10_000, what: "the worker out of both pools" });
    expect(await worker.exited).toBe(0);
    for (const o of orchestrators) {
      const mine = o.events.filter(([event, p]) => (event.startsWith("job") ? (p as { job: string }).job === held.id : p === worker.id)).map(([event]) => event);
      // Each pool: added, admitted, removed; the job ran once (on one of them), attempt 1, no retry.
      expect(mine.filter((event) => event.startsWith("worker"))).toEqual(["workerAdded", "workerAdmitted", "workerRemoved"]);
      expect(mine.filter((event) => event === "jobRetrying" || event === "jobFailed")).toEqual([]);
    }
    expect(worker.output()).toContain('"msg":"SIGTERM: shutting down"');
  });

  it("leaves both pools when killed with SIGKILL, and its job runs again on another worker", async () => {
    const a = await startWorker(`killed-${randomUUID().slice(0, 8)}`);
    const b = await startWorker(`survivor-${randomUUID().slice(0, 8)}`);
    await waitFor(() => inBothPools(a.id) && inBothPools(b.id), { timeoutMs: 15_000, what: "both workers admitted by both orchestrators" });
    // Hold jobs until one of them runs on the worker to kill.
    const release = join(scratch, `release-${randomUUID()}`);
    const handles = [];
    let onA: string | undefined;
    for (let i = 0; i < 4 && onA === undefined; i++) {
      const handle = await client.submit({ type: "hold", payload: { release }, timeoutMs: 60_000 });
      handles.push(handle);
      const started = await waitFor(
        () => orchestrators.flatMap((o) => o.events).find(([event, p]) => event === "jobStarted" && (p as { job: string }).job === handle.id)?.[1] as { workerId: string } | undefined,
        { timeoutMs: 15_000, what: "the held job running" },
      );
      if (started.workerId === a.id) onA = handle.id;
    }
    expect(onA, "a held job ran on the worker to kill").toBeDefined();
    process.kill(workerPid(a), "SIGKILL");
    await waitFor(() => inNoPool(a.id), { timeoutMs: 15_000, what: "the killed worker out of both pools" });
    await writeFile(release, "");
    const killedJob = handles.find((h) => h.id === onA);
    expect(await killedJob?.result({ timeoutMs: 20_000 })).toMatchObject({ attempt: 2 });
    const restarted = orchestrators.flatMap((o) => o.events).find(([event, p]) => event === "jobStarted" && (p as { job: string; attempt: number }).job === onA && (p as { attempt: number }).attempt === 2);
    expect(restarted?.[1]).toMatchObject({ workerId: b.id });
    for (const handle of handles) await expect(handle.result({ timeoutMs: 20_000 })).resolves.toBeDefined();
    process.kill(workerPid(b), "SIGTERM");
    expect(await b.exited).toBe(0);
  });
});
