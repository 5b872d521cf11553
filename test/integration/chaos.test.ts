import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runChaos } from "../helpers/chaos-run.ts";
import { isRunning } from "../helpers/processes.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";

const rabbit = await useRabbitMq();

/** The parts of bench/results/chaos.json this test reads. */
interface ChaosReport {
  ok: boolean;
  problems: string[];
  setup: { queue: string };
  jobs: number;
  completed: number;
  failed: number;
  lost: number;
  duplicate_completions: number;
  ran_more_than_once: Array<{ jobId: string; explained_by: string[] }>;
  unexplained_duplicates: Array<{ jobId: string; reason: string }>;
  faults_by_kind: Record<string, number>;
  faults_injected: Array<{ kind: string; runs_in_flight: number }>;
  details: { pids: number[] };
}

describe.skipIf(!rabbit.available)("npm run chaos (500 jobs, two dispatcher processes, four worker processes, faults of every kind)", () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("loses no job and explains every duplicate run by a fault that hit it", { timeout: 150_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), "blacktree-chaos-test-"));
    const out = join(dir, "chaos.json");
    // Seed 7 at 25 jobs/s: 20 s of submitting and eight faults, at least one of each kind. Handlers
    // of 20-200 ms keep a few jobs in flight at any time, so the faults strike running jobs.
    const args = ["--jobs", "500", "--seed", "7", "--rate", "25", "--handler-ms", "20-200", "--timeout-s", "100", "--out", out];
    const { code, output } = await runChaos(args, 120_000);
    const report = JSON.parse(await readFile(out, "utf8").catch(() => "null")) as ChaosReport | null;
    expect(report, `the run wrote no report:\n${output}`).not.toBeNull();
    const r = report!;
    expect(r.problems, output).toEqual([]);
    expect(r.lost).toBe(0);
    expect(r.unexplained_duplicates).toEqual([]);
    expect(r.failed).toBe(0);
    expect(r.completed).toBe(500);
    expect(code, output).toBe(0);
    for (const kind of ["worker_kill", "worker_freeze", "connection_cut", "connection_blackhole", "dispatcher_kill"]) {
      expect(r.faults_by_kind[kind], `faults of kind ${kind}\n${output}`).toBeGreaterThanOrEqual(1);
    }
    // The faults struck jobs that were running, and every duplicate names the fault behind it.
    expect(r.faults_injected.filter((f) => f.runs_in_flight > 0).length, output).toBeGreaterThanOrEqual(3);
    expect(r.ran_more_than_once.length, output).toBeGreaterThan(0);
    for (const duplicate of r.ran_more_than_once) expect(duplicate.explained_by.length, duplicate.jobId).toBeGreaterThan(0);
    // Nothing outlives the run: no process it started, no broker object it declared.
    expect(r.details.pids.filter(isRunning)).toEqual([]);
    const leftover = await rabbit.withChannel((channel) => channel.checkQueue(r.setup.queue)).then(
      () => true,
      () => false,
    );
    expect(leftover, `queue ${r.setup.queue} still exists`).toBe(false);
  });
});
