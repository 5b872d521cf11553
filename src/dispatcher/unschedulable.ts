import type { JobRequirements, WorkerInfo } from "../worker-pool/types.ts";
import type { Sticky } from "./placement.ts";

function formatLabels(labels: Readonly<Record<string, string>>): string {
  return `{${Object.entries(labels).map(([key, value]) => `${key}: ${value}`).join(", ")}}`;
}

function serves(worker: WorkerInfo, type: string): boolean {
  return worker.jobTypes === undefined || worker.jobTypes.includes(type);
}

function carries(worker: WorkerInfo, labels: Readonly<Record<string, string>> | undefined): boolean {
  if (labels === undefined) return true;
  for (const [key, value] of Object.entries(labels)) if (worker.labels[key] !== value) return false;
  return true;
}

/**
 * Why no healthy worker of `workers` can run `job`, in words an operator can act on, or
 * undefined when one can: "no worker serves job type `x`", "no worker with labels {arch: arm64}
 * serves job type `x`", "no healthy worker with labels {arch: arm64}", "worker w1, which ran the
 * previous job of sticky key `k`, is unhealthy". One home for the wording of the `unschedulable`
 * reason. @internal
 */
export function unschedulableReason(workers: readonly WorkerInfo[], job: JobRequirements, sticky?: Sticky): string | undefined {
  const live = workers.filter((w) => w.state !== "removed");
  if (sticky?.hard === true && sticky.workerId !== undefined) {
    const worker = live.find((w) => w.id === sticky.workerId);
    if (worker !== undefined && worker.state !== "idle" && worker.state !== "busy" && worker.state !== "saturated") {
      return `worker ${worker.id}, which ran the previous job of sticky key \`${sticky.key}\`, is ${worker.state}${worker.reason === undefined ? "" : ` (${worker.reason})`}: a job with sticky "hard" waits for it`;
    }
  }
  const serving = live.filter((w) => serves(w, job.type));
  const labels = job.labels !== undefined && Object.keys(job.labels).length > 0 ? job.labels : undefined;
  if (serving.length === 0) return `no worker serves job type \`${job.type}\``;
  const matching = serving.filter((w) => carries(w, labels));
  if (matching.length === 0) return `no worker with labels ${formatLabels(labels ?? {})} serves job type \`${job.type}\``;
  if (matching.some((w) => w.state === "idle" || w.state === "busy" || w.state === "saturated")) return undefined;
  return labels === undefined ? `no healthy worker serves job type \`${job.type}\`` : `no healthy worker with labels ${formatLabels(labels)}`;
}
