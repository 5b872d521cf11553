import { randomUUID } from "node:crypto";
import { ENVELOPE_VERSION, parseEnvelope, type JobEnvelope } from "../job/envelope.ts";
import type { JobQueue } from "../queue/types.ts";
import { checkMetadata } from "../store/record-rules.ts";
import type { JobStore } from "../store/types.ts";
import { scheduleJobId } from "./schedule-rules.ts";
import type { ScheduleRecord } from "./types.ts";

/** What {@link fireTick} did. @internal */
export interface FiredTick {
  jobId: string;
  /** False when the job had started or ended already (nothing queued). */
  queued: boolean;
}

/** The envelope of one tick's job: the schedule's template, the tick's id, and the link back. @internal */
export function tickEnvelope(record: ScheduleRecord, tick: number, now: number): JobEnvelope {
  const { metadata: _metadata, ...fields } = record.job;
  return parseEnvelope({
    ...fields, v: ENVELOPE_VERSION, id: scheduleJobId(record.id, tick), attempt: 1, createdAt: new Date(now).toISOString(),
    schedule: { id: record.id, tick, copy: randomUUID() },
  });
}

/**
 * Fires one tick of a schedule, in one place for the scheduler and for `trigger()`: creates the
 * job's record as `schedule:<id>:<tick>` (create-if-absent: a tick fired twice is one job) and
 * queues the job, unless its record shows it started or ended. A job whose record exists but
 * shows nothing started is queued (again): its first firing may have died before the queue
 * confirmed it, and a copy already on the queue is harmless: each firing is a copy of its own
 * (`schedule.copy`), and the dispatcher's exclusive start runs the first copy that starts.
 * @internal
 */
export async function fireTick(record: ScheduleRecord, tick: number, queue: JobQueue, store: JobStore, now = Date.now()): Promise<FiredTick> {
  const envelope = tickEnvelope(record, tick, now);
  const { metadata } = record.job;
  const { created, record: job } = await store.create({
    id: envelope.id, type: envelope.type, payload: envelope.payload, maxAttempts: envelope.maxAttempts, timeoutMs: envelope.timeoutMs,
    startTimeoutMs: envelope.startTimeoutMs ?? 3_600_000, createdAt: now, schedule: { id: record.id, tick },
    ...(metadata === undefined ? {} : { metadata: checkMetadata("job.metadata", metadata) }),
    ...(envelope.labels === undefined ? {} : { labels: envelope.labels }),
    ...(envelope.priority === undefined ? {} : { priority: envelope.priority }),
  });
  if (!created && (job.state !== "queued" || job.attempts.length > 0)) return { jobId: envelope.id, queued: false };
  await queue.enqueue(created ? envelope : { ...envelope, createdAt: new Date(job.createdAt).toISOString() });
  return { jobId: envelope.id, queued: true };
}
