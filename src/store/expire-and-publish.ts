import { OrchestratorError } from "../errors.ts";
import type { JobEvents } from "../queue/types.ts";
import { lastAttemptOf, outcomeOf } from "./record-rules.ts";
import type { JobRecord, JobStore } from "./types.ts";

/**
 * Fails the jobs of `store` past their start timeout and publishes each one's `failed` outcome
 * (so every handle following it settles); `onExpired` sees each record. Shared by the client's
 * poller and the dispatcher's maintenance. Publish failures are reported: the record is what
 * counts, and pollers read it. @internal
 */
export async function expireAndPublish(
  store: JobStore,
  events: JobEvents,
  report: (error: OrchestratorError) => void,
  onExpired: (record: JobRecord) => void = () => {},
): Promise<number> {
  const expired = await store.expireUnstarted();
  for (const record of expired) {
    onExpired(record);
    const outcome = outcomeOf(record);
    if (outcome === undefined) continue;
    const attempt = Math.max(1, lastAttemptOf(record));
    await events.publish({ kind: "result", jobId: record.id, attempt, at: record.finishedAt ?? Date.now(), outcome }, { confirm: true }).catch((error: unknown) => {
      report(OrchestratorError.from(error));
    });
  }
  return expired.length;
}
