import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runChaos } from "../helpers/chaos-run.ts";
import { privateRabbitMqAvailable } from "../helpers/private-rabbitmq.ts";
import { isRunning } from "../helpers/processes.ts";

const available = privateRabbitMqAvailable();

/** The parts of chaos.json this test reads. */
interface ChaosReport {
  ok: boolean;
  problems: string[];
  jobs: number;
  completed: number;
  failed: number;
  lost: number;
  lost_by_broker: { jobs: string[]; evidence: string };
  unexplained_duplicates: unknown[];
  ran_more_than_once: Array<{ jobId: string; explained_by: string[]; attempts: Array<{ attempt: number; dispatched_s: number }> }>;
  faults_by_kind: Record<string, number>;
  faults_injected: Array<{ id: number; kind: string; target: string; ended_s: number | null; note?: string; runs_in_flight: number }>;
  flow_after_faults: Array<{ id: number; kind: string; completed_while_active: number; completed_after: number }>;
  overlap_windows: { count: number; max_ms: number };
  fencing: { jobs_checked: number; violations: unknown[] };
  setup: { cluster: Array<{ node: string }> | null };
  details: { pids: number[] };
}

// The whole product on a private three-node RabbitMQ cluster, every part in its own process: a
// JobClient producer on node 0, two dispatchers on nodes 1 and 2 (each with all three nodes in
// its URL list), four gRPC workers. While jobs flow, a node is frozen (SIGSTOP) and thawed, then
// the job queue's leader node is killed (kill -9) and restarted on its data, rejoining the cluster.
describe.skipIf(!available)("the product on a three-node RabbitMQ cluster losing nodes (npm run chaos -- --cluster --faults nodes)", () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("loses no job, runs a job again only with a higher attempt and fencing token, and keeps jobs flowing through each node fault", { timeout: 420_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), "blacktree-cluster-test-"));
    const out = join(dir, "chaos.json");
    // 1,200 jobs at 20/s: 60 s of submits; the freeze strikes at 3 s, the leader kill at 15 s, and
    // the killed node is back (10-30 s) while jobs are still submitted.
    const args = ["--cluster", "--faults", "nodes", "--jobs", "1200", "--seed", "3", "--rate", "20", "--handler-ms", "20-200", "--timeout-s", "240", "--out", out];
    const { code, output } = await runChaos(args, 360_000);
    const report = JSON.parse(await readFile(out, "utf8").catch(() => "null")) as ChaosReport | null;
    expect(report, `the run wrote no report:\n${output}`).not.toBeNull();
    const r = report!;
    expect(r.setup.cluster?.map((n) => n.node)).toEqual(["n0", "n1", "n2"]);
    // Both faults happened, the kill struck the job queue's leader, and the killed node came back.
    expect(r.faults_by_kind, output).toMatchObject({ node_kill: 1, node_freeze: 1 });
    const kill = r.faults_injected.find((f) => f.kind === "node_kill")!;
    expect(kill.note, output).toBe("the job queue's leader");
    expect(kill.ended_s, `${kill.target} restarted and rejoined\n${output}`).not.toBeNull();
    // Nothing lost by the product, nothing failed, every duplicate explained by the fault that
    // caused it. RabbitMQ 3.10 itself may drop a publish it confirmed while the killed node is
    // down (2 or 3 jobs in 4 of 19 runs here, docs/rabbitmq.md): such a job was never handed to a
    // dispatcher and no queue holds it (the run reads the broker's queues before it stops the
    // nodes). The run reports those apart, with that evidence; every other lost job is a failure.
    expect(r.problems, output).toEqual([]);
    if (r.lost_by_broker.jobs.length > 0) console.warn(`the broker lost ${r.lost_by_broker.jobs.length} confirmed job(s): ${r.lost_by_broker.evidence}`);
    expect(r.lost_by_broker.jobs.length, output).toBeLessThanOrEqual(5);
    expect(r.lost - r.lost_by_broker.jobs.length).toBe(0);
    expect(r.failed).toBe(0);
    expect(r.completed + r.lost_by_broker.jobs.length).toBe(1200);
    expect(r.unexplained_duplicates).toEqual([]);
    // A job runs again only with a higher attempt (in the order its runs were handed out), and a
    // later run never holds a smaller fencing token.
    for (const duplicate of r.ran_more_than_once) {
      const attempts = [...duplicate.attempts].sort((a, b) => a.dispatched_s - b.dispatched_s).map((a) => a.attempt);
      // A submit sent again after an unknown outcome is a second message, a new submission whose
      // attempts count from 1 again: its runs may hand out a smaller attempt after the first
      // message's retry (seen: 2, then 1). Without a job store nothing shared orders the two; the
      // analysis reports such jobs apart (fencing.resubmitted), and a store's record stops the rerun.
      if (duplicate.explained_by.some((e) => e.includes("submit sent again"))) continue;
      for (let i = 1; i < attempts.length; i++) {
        expect(attempts[i]!, `${duplicate.jobId}: ${attempts.join(", ")}`).toBeGreaterThan(attempts[i - 1]!);
      }
    }
    expect(r.fencing.violations).toEqual([]);
    // Jobs kept completing while the killed node was down, and after it rejoined and the frozen
    // one thawed.
    for (const flow of r.flow_after_faults.filter((f) => f.kind.startsWith("node"))) {
      expect(flow.completed_after, `jobs completed after fault #${flow.id} (${flow.kind}) ended\n${output}`).toBeGreaterThan(0);
    }
    const whileDown = r.flow_after_faults.find((f) => f.id === kill.id)!;
    expect(whileDown.completed_while_active, `jobs completed while ${kill.target} was down\n${output}`).toBeGreaterThan(0);
    expect(code, output).toBe(0);
    // Nothing outlives the run: no process it started (the broker nodes included).
    expect(r.details.pids.filter(isRunning)).toEqual([]);
  });
});
