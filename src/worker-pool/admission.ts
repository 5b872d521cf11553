import { OrchestratorError } from "../errors.ts";
import { WORKER_PROTOCOL } from "../transport/types.ts";
import type { WorkerDescription, WorkerTransport } from "../transport/types.ts";

/**
 * How the pool admits a worker: what it announced, narrowed by what the pool was told.
 * @internal
 */

/** What the pool was told about a worker (`WorkerOptions`): limits and requirements, never additions. */
export interface Requested {
  readonly slots: number | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly jobTypes: readonly string[] | undefined;
}

/** What the pool uses for a worker once admitted. */
export interface Admitted {
  readonly slots: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly jobTypes: readonly string[] | undefined;
}

/**
 * The worker as the pool will use it: its announced slots (at most `requested.slots`), its
 * announced job types (only those in `requested.jobTypes`, when given), its announced labels
 * (each of `requested.labels` must be among them with the same value).
 * @throws {OrchestratorError} `precondition_failed` saying why the worker cannot join: another
 * protocol, none of the expected job types, a missing or different label.
 */
export function narrow(workerId: string, announced: WorkerDescription, requested: Requested): Admitted {
  const refuse = (why: string) => new OrchestratorError("precondition_failed", `worker ${workerId} ${why}`, { details: { workerId } });
  if (announced.protocol !== undefined && announced.protocol !== "" && announced.protocol !== WORKER_PROTOCOL) {
    throw refuse(`speaks protocol ${announced.protocol}, this orchestrator ${WORKER_PROTOCOL}`);
  }
  const announcedSlots = Number.isSafeInteger(announced.slots) && announced.slots > 0 ? announced.slots : undefined;
  const slots = Math.min(announcedSlots ?? requested.slots ?? 1, requested.slots ?? Number.MAX_SAFE_INTEGER);
  let jobTypes: readonly string[] | undefined = announced.jobTypes.length > 0 ? [...announced.jobTypes] : requested.jobTypes;
  if (requested.jobTypes !== undefined && announced.jobTypes.length > 0) {
    const served = new Set(announced.jobTypes);
    jobTypes = requested.jobTypes.filter((type) => served.has(type));
    if (jobTypes.length === 0) {
      throw refuse(`runs none of the job types the pool expects of it (${requested.jobTypes.join(", ")}); it runs ${announced.jobTypes.join(", ")}`);
    }
  }
  for (const [name, value] of Object.entries(requested.labels)) {
    if (!Object.hasOwn(announced.labels, name)) throw refuse(`does not carry the label ${name}=${value} the pool expects of it`);
    if (announced.labels[name] !== value) throw refuse(`carries ${name}=${announced.labels[name]}, the pool expects ${name}=${value}`);
  }
  return { slots, labels: Object.freeze({ ...announced.labels }), jobTypes: jobTypes === undefined ? undefined : Object.freeze([...jobTypes]) };
}

/**
 * Opens the worker's session and asks what it is (`connect()`, or `describe()` for a transport
 * without sessions), then runs its health check: what a worker must pass before the pool leases it.
 * @throws {OrchestratorError} the transport's error (with its reason), or `unavailable` when the
 * check answers `not_serving`.
 */
export async function probe(workerId: string, transport: WorkerTransport, signal: AbortSignal): Promise<WorkerDescription> {
  const description = transport.connect ? await transport.connect({ signal }) : await transport.describe({ signal });
  const status = await transport.check({ signal });
  if (status !== "serving") throw new OrchestratorError("unavailable", `worker ${workerId} answered its first health check with ${String(status)}`);
  return description;
}
