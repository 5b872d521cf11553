/**
 * Wire benchmark: CPU per job and latency of the gRPC wire `GrpcTransport` ↔ `serveWorker()`
 * speaks (one multiplexed session stream per worker, batched) against a plain @grpc/grpc-js
 * unary call per job, in the same run on the same machine. The worker side runs in a child
 * process (`wire-server.ts`), so each side's CPU is read on its own.
 *
 *   node bench/wire/wire.ts            # 3 rounds, 20,000 jobs per scenario and round
 *   node bench/wire/wire.ts --quick    # 1 round, 5,000 jobs
 *   options: --rounds N --jobs N --concurrency N --latency N
 *
 * Prints a table and writes bench/results/wire.json. docs/wire.md quotes a run.
 */
import { fork } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { Client, credentials } from "@grpc/grpc-js";
import { ExecuteRequestSchema } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { ExecuteRequest as WireExecuteRequest, ExecuteResponse } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import { GrpcTransport } from "../../src/transport/grpc/index.ts";
import { methodOf, workerServiceDefinition } from "../../src/wire/wire.ts";
import { median, percentile, round } from "../lib/stats.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    jobs: { type: "string" },
    concurrency: { type: "string" },
    latency: { type: "string" },
  },
});
const rounds = Number(args.rounds ?? (args.quick ? 1 : 3));
const jobs = Number(args.jobs ?? (args.quick ? 5000 : 20_000));
const concurrency = Number(args.concurrency ?? 64);
const latencyCalls = Number(args.latency ?? (args.quick ? 1000 : 3000));

// ---- the worker process -------------------------------------------------------------------------
const child: ChildProcess = fork(fileURLToPath(new URL("./wire-server.ts", import.meta.url)), [], { execArgv: ["--no-warnings"] });
const ready = await new Promise<{ unaryPort: number; workers: Record<string, number> }>((resolve, reject) => {
  child.once("message", (m) => resolve(m as { unaryPort: number; workers: Record<string, number> }));
  child.once("exit", (code) => reject(new Error(`wire-server exited with ${code}`)));
});
let nextId = 0;
function serverCpuUs(): Promise<number> {
  const id = ++nextId;
  return new Promise((resolve) => {
    const onMessage = (m: { id?: number; cpuUs?: number }) => {
      if (m.id !== id) return;
      child.off("message", onMessage);
      resolve(m.cpuUs as number);
    };
    child.on("message", onMessage);
    child.send({ cmd: "cpu", id });
  });
}
const selfCpuUs = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

// ---- the scenarios: each returns "run one job" -----------------------------------------------------
type RunOne = (i: number) => Promise<unknown>;
interface Scenario {
  name: string;
  what: string;
  open: () => Promise<{ run: RunOne; close: () => Promise<void> }>;
}

const signal = new AbortController().signal;
const onEvent = () => {};
const identity = (b: Buffer) => b;

function sessionScenario(flushMode: "immediate" | "microtask" | "none", what: string): Scenario {
  return {
    name: `session/${flushMode}`,
    what,
    open: async () => {
      const transport = new GrpcTransport({ address: `127.0.0.1:${ready.workers[flushMode]}`, flushMode });
      let seq = 0;
      return {
        run: (i) => transport.execute({ jobId: `job-${++seq}`, type: "noop", payload: { n: i }, attempt: 1, deadline: Date.now() + 60_000 }, { signal, onEvent }),
        close: () => transport.close(),
      };
    },
  };
}

const scenarios: Scenario[] = [
  {
    name: "grpc-js unary",
    what: "baseline: one plain @grpc/grpc-js unary call per job (raw JSON bytes, no protobuf)",
    open: async () => {
      const client = new Client(`127.0.0.1:${ready.unaryPort}`, credentials.createInsecure());
      return {
        run: (i) =>
          new Promise((resolve, reject) =>
            client.makeUnaryRequest("/bench.Unary/Run", identity, identity, Buffer.from(JSON.stringify({ n: i })), (error, value) =>
              error ? reject(error) : resolve(JSON.parse((value as Buffer).toString())),
            ),
          ),
        close: async () => client.close(),
      };
    },
  },
  sessionScenario("immediate", "GrpcTransport session, batches flushed at setImmediate (the default)"),
  sessionScenario("microtask", "GrpcTransport session, batches flushed at the end of each callback"),
  sessionScenario("none", "GrpcTransport session, one gRPC message per protocol message (no batching)"),
  {
    name: "Execute RPC",
    what: "the plain server-streaming Execute RPC, one call per job (what any gRPC client can use)",
    open: async () => {
      const client = new Client(`127.0.0.1:${ready.workers.immediate}`, credentials.createInsecure());
      const execute = methodOf(workerServiceDefinition, "execute");
      let seq = 0;
      return {
        run: (i) =>
          new Promise((resolve, reject) => {
            const request = create(ExecuteRequestSchema, { job: { jobId: `x-${++seq}`, type: "noop", payload: Buffer.from(JSON.stringify({ n: i })), attempt: 1, timeoutMs: 60_000 } });
            const call = client.makeServerStreamRequest<WireExecuteRequest, ExecuteResponse>(
              execute.path,
              execute.requestSerialize as (v: WireExecuteRequest) => Buffer,
              execute.responseDeserialize as (b: Buffer) => ExecuteResponse,
              request,
            );
            let result: unknown;
            call.on("data", (response: ExecuteResponse) => {
              if (response.kind.case === "result" && response.kind.value.outcome.case === "value") result = JSON.parse(Buffer.from(response.kind.value.outcome.value).toString());
            });
            call.on("error", reject);
            call.on("end", () => resolve(result));
          }),
        close: async () => client.close(),
      };
    },
  },
];

// ---- measurement --------------------------------------------------------------------------------
interface Measurement {
  jobsPerS: number;
  clientUsPerJob: number;
  serverUsPerJob: number;
  totalUsPerJob: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
}

async function throughput(run: RunOne, n: number): Promise<{ wallMs: number; clientUs: number; serverUs: number }> {
  let next = 0;
  const serverBefore = await serverCpuUs();
  const clientBefore = selfCpuUs();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await run(next++);
    }),
  );
  const wallMs = performance.now() - start;
  const clientUs = selfCpuUs() - clientBefore;
  const serverUs = (await serverCpuUs()) - serverBefore;
  return { wallMs, clientUs, serverUs };
}

async function latency(run: RunOne, n: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await run(i);
    samples.push(performance.now() - start);
  }
  return samples;
}

async function measure(scenario: Scenario): Promise<Measurement> {
  const { run, close } = await scenario.open();
  try {
    await throughput(run, Math.min(2000, jobs)); // warm up the JIT and the connection
    const t = await throughput(run, jobs);
    const samples = await latency(run, latencyCalls);
    return {
      jobsPerS: (jobs / t.wallMs) * 1000,
      clientUsPerJob: t.clientUs / jobs,
      serverUsPerJob: t.serverUs / jobs,
      totalUsPerJob: (t.clientUs + t.serverUs) / jobs,
      latencyP50Ms: percentile(samples, 50) as number,
      latencyP99Ms: percentile(samples, 99) as number,
    };
  } finally {
    await close();
  }
}

const results = new Map<string, Measurement[]>(scenarios.map((s) => [s.name, []]));
for (let r = 0; r < rounds; r++) {
  // Rotate the order each round so no scenario always runs on a cold or a hot machine.
  const order = scenarios.map((_, i) => scenarios[(i + r) % scenarios.length] as Scenario);
  for (const scenario of order) {
    const m = await measure(scenario);
    results.get(scenario.name)?.push(m);
    console.error(`round ${r + 1}/${rounds} ${scenario.name}: ${Math.round(m.jobsPerS)} jobs/s, ${m.totalUsPerJob.toFixed(1)} µs CPU/job`);
  }
}
child.send({ cmd: "exit" });

// ---- report -------------------------------------------------------------------------------------
const med = (name: string, key: keyof Measurement) => median((results.get(name) ?? []).map((m) => m[key])) as number;
const baseline = "grpc-js unary";
const rows = scenarios.map((s) => ({
  scenario: s.name,
  jobs_s: round(med(s.name, "jobsPerS"), 0),
  cpu_ms_per_job_client: round(med(s.name, "clientUsPerJob") / 1000, 4),
  cpu_ms_per_job_worker: round(med(s.name, "serverUsPerJob") / 1000, 4),
  cpu_ms_per_job_total: round(med(s.name, "totalUsPerJob") / 1000, 4),
  cpu_vs_unary: round(med(s.name, "totalUsPerJob") / med(baseline, "totalUsPerJob"), 2),
  latency_p50_ms: round(med(s.name, "latencyP50Ms"), 3),
  latency_p99_ms: round(med(s.name, "latencyP99Ms"), 3),
  what: s.what,
}));
const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? "unknown", node: process.version, platform: `${process.platform}/${process.arch}` };
const header = ["scenario", "jobs/s", "CPU ms/job orch", "CPU ms/job worker", "CPU ms/job total", "× unary CPU", "p50 ms", "p99 ms"];
const table = rows.map((r) => [
  r.scenario,
  String(r.jobs_s),
  String(r.cpu_ms_per_job_client),
  String(r.cpu_ms_per_job_worker),
  String(r.cpu_ms_per_job_total),
  String(r.cpu_vs_unary),
  String(r.latency_p50_ms),
  String(r.latency_p99_ms),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? "").length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
console.log(`\nWire benchmark: ${rounds} round(s) × ${jobs} no-op jobs at concurrency ${concurrency}; latency from ${latencyCalls} sequential calls. Medians.`);
console.log(`${machine.cpus} × ${machine.model}, node ${machine.node}\n`);
console.log(line(header));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const row of table) console.log(line(row));
const out = fileURLToPath(new URL("../results/wire.json", import.meta.url));
await mkdir(fileURLToPath(new URL("../results/", import.meta.url)), { recursive: true });
await writeFile(out, `${JSON.stringify({ at: new Date().toISOString(), machine, rounds, jobs, concurrency, latencyCalls, rows }, null, 2)}\n`);
console.log(`\nwritten to ${out}`);
