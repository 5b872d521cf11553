import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { JobClient } from "../../src/client/job-client.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const handlersModule = fileURLToPath(new URL("../helpers/announce-handlers.mjs", import.meta.url));
const orchestratorEntry = fileURLToPath(new URL("../helpers/discovery-orchestrator-entry.ts", import.meta.url));
const rabbit = await useRabbitMq();
// npx and the installed bin run on this node (24), not whatever `node` is first on PATH.
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, npm_config_update_notifier: "false" };

/** An orchestrator process (see discovery-orchestrator-entry.ts) and the events it printed. */
interface Orchestrator {
  readonly events: Array<Record<string, unknown> & { event: string }>;
  /** The worker's state in its pool, as its events tell: undefined when not in the pool. */
  state(id: string): string | undefined;
  stop(): Promise<void>;
}

/** A worker process started with `npx blacktree-worker` from the installed package. */
interface WorkerCommand {
  readonly child: ChildProcess;
  readonly id: string;
  readonly exited: Promise<number | null>;
  output(): string;
}

// The whole story with processes only: the package is packed and installed like a user installs
// it, workers are started with `npx blacktree-worker … --announce`, and two orchestrator processes
// (each its own pool, discovery, dispatcher and broker connection) find them with no address given.
// This process only submits jobs and reads what the others print.
describe.skipIf(!rabbit.available)("blacktree-worker --announce, found by two orchestrators through the broker", () => {
  let project: string;
  let scratch: string;
  const exchange = `test-workers-announce-${randomUUID()}`;
  const queueName = rabbit.queueName("workers-announce");
  const children = new Set<ChildProcess>();
  const workers: WorkerCommand[] = [];
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
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", tarball], { cwd: project, env, timeout: 180_000 });

    orchestrators.push(await startOrchestrator(), await startOrchestrator());
    clientQueue = new AmqpQueue({ url: rabbit.url, queueName });
    clientEvents = new AmqpEvents({ url: rabbit.url, queueName });
    client = new JobClient({ queue: clientQueue, events: clientEvents });
  }, 300_000);

  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await client?.close();
    for (const o of orchestrators) await o.stop();
    await clientQueue?.close();
    await clientEvents?.close();
    await rabbit.withChannel((channel) => channel.deleteExchange(exchange)).catch(() => {});
    await rabbit.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function startOrchestrator(): Promise<Orchestrator> {
    const child = spawn(process.execPath, ["--no-warnings", orchestratorEntry, JSON.stringify({ url: rabbit.url, queueName, exchange })], { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    const events: Orchestrator["events"] = [];
    let partial = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") events.push(JSON.parse(line));
    });
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once("exit", () => {
      children.delete(child);
      resolve();
    }));
    await waitFor(() => events.some((e) => e.event === "ready") || child.exitCode !== null, { timeoutMs: 30_000, what: "an orchestrator process ready" });
    if (child.exitCode !== null) throw new Error(`orchestrator process exited:\n${stderr}`);
    return {
      events,
      state(id) {
        let state: string | undefined;
        for (const e of events) {
          if (e.id !== id) continue;
          if (e.event === "workerAdded") state = "joining";
          else if (e.event === "workerState") state = e.to as string;
          else if (e.event === "workerRemoved") state = undefined;
        }
        return state;
      },
      async stop() {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
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
    const worker = { child, id, exited, output: () => output };
    workers.push(worker);
    return worker;
  }

  /** The pid of the node process npx started (npx itself may stay in between). */
  function workerPid(worker: WorkerCommand): number {
    const line = worker.output().split("\n").find((l) => l.includes('"msg":"worker listening"'));
    return JSON.parse(line as string).pid as number;
  }

  const inBothPools = (id: string) => orchestrators.every((o) => ["idle", "busy"].includes(o.state(id) ?? ""));
  // Each test's workers are its own: stopped (or killed) before it ends, even when it fails.
  afterEach(() => {
    for (const worker of workers.splice(0)) {
      try {
        process.kill(workerPid(worker), "SIGKILL");
      } catch {
        // Already gone.
      }
      worker.child.kill("SIGKILL");
    }
  });
  const inNoPool = (id: string) => orchestrators.every((o) => o.state(id) === undefined);
  /** `promise`, or its error with what the orchestrators and the worker printed. */
  const explained = <T,>(promise: Promise<T>, job: string, worker: WorkerCommand): Promise<T> =>
    promise.catch((error: unknown) => {
      throw new Error(`${String(error)}\njob events: ${JSON.stringify(jobEvents(job))}\npool events: ${JSON.stringify(orchestrators.map((o) => o.events.filter((e) => e.id === worker.id)))}\nworker:\n${worker.output()}`);
    });
  const jobEvents = (job: string) => orchestrators.flatMap((o) => o.events.filter((e) => e.job === job));

  it("is found by both orchestrators with no address given, runs a job, and drains out of both pools on SIGTERM with nothing lost", async () => {
    const worker = await startWorker(`announced-${randomUUID().slice(0, 8)}`);
    await waitFor(() => inBothPools(worker.id), { timeoutMs: 15_000, what: "the worker admitted by both orchestrators" });
    const admitted = (o: Orchestrator) => o.events.find((e) => e.event === "workerAdmitted" && e.id === worker.id);
    await waitFor(() => orchestrators.every(admitted), { timeoutMs: 5000, what: "workerAdmitted in both" });
    for (const o of orchestrators) expect(admitted(o)).toMatchObject({ slots: 2, jobTypes: ["where", "hold"], workerId: worker.id });

    const first = await client.submit({ type: "where", payload: {} });
    expect(await explained(first.result({ timeoutMs: 15_000 }), first.id, worker)).toMatchObject({ attempt: 1 });

    // A job running when the worker is told to stop finishes there; the worker leaves both pools.
    const release = join(scratch, `release-${randomUUID()}`);
    const held = await client.submit({ type: "hold", payload: { release }, timeoutMs: 60_000 });
    // Running on the worker, not only assigned: the handler's first progress proves it. A SIGTERM
    // between the assign and the worker receiving it rightly refuses the job (it is retried).
    let holding = false;
    held.on("progress", () => (holding = true));
    await waitFor(() => holding, { timeoutMs: 15_000, what: "the held job running on the worker" });
    process.kill(workerPid(worker), "SIGTERM");
    // Its goodbye: the pool holding the job lets it finish (draining), the other lets the worker go.
    const leaving = () => orchestrators.every((o) => [undefined, "draining"].includes(o.state(worker.id)));
    await waitFor(() => leaving() && orchestrators.some((o) => o.state(worker.id) === "draining"), { timeoutMs: 10_000, what: "the worker leaving both pools" });
    await writeFile(release, "");
    expect(await explained(held.result({ timeoutMs: 15_000 }), held.id, worker)).toMatchObject({ attempt: 1 });
    await waitFor(() => inNoPool(worker.id), { timeoutMs: 10_000, what: "the worker out of both pools" });
    expect(await worker.exited).toBe(0);
    for (const o of orchestrators) {
      // Each pool: added, admitted, removed.
      expect(o.events.filter((e) => e.id === worker.id && e.event !== "workerState").map((e) => e.event)).toEqual(["workerAdded", "workerAdmitted", "workerRemoved"]);
    }
    // The job ran once, as attempt 1, on one of them: started and completed, nothing retried or failed.
    await waitFor(() => jobEvents(held.id).some((e) => e.event === "jobCompleted"), { timeoutMs: 5000, what: "jobCompleted" });
    expect(jobEvents(held.id).map((e) => [e.event, e.attempt, e.workerId])).toEqual([
      ["jobStarted", 1, worker.id],
      ["jobCompleted", 1, worker.id],
    ]);
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
      const started = await waitFor(() => jobEvents(handle.id).find((e) => e.event === "jobStarted"), { timeoutMs: 15_000, what: "the held job running" });
      if (started.workerId === a.id) onA = handle.id;
    }
    expect(onA, "a held job ran on the worker to kill").toBeDefined();
    process.kill(workerPid(a), "SIGKILL");
    await waitFor(() => inNoPool(a.id), { timeoutMs: 15_000, what: "the killed worker out of both pools" });
    await writeFile(release, "");
    const killedJob = handles.find((h) => h.id === onA);
    expect(await killedJob?.result({ timeoutMs: 20_000 })).toMatchObject({ attempt: 2 });
    const restarted = jobEvents(onA as string).find((e) => e.event === "jobStarted" && e.attempt === 2);
    expect(restarted).toMatchObject({ workerId: b.id });
    for (const handle of handles) await expect(handle.result({ timeoutMs: 20_000 })).resolves.toBeDefined();
    process.kill(workerPid(b), "SIGTERM");
    expect(await b.exited).toBe(0);
  });
});
