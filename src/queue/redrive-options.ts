import { invalidArgument } from "../errors.ts";
import { checkInteger, checkObject, checkSignal, checkString, optional } from "../validate.ts";
import type { DeadLettersOptions, RedriveOptions } from "./types.ts";

/** {@link RedriveOptions} checked once, for every queue's `redrive()`. @internal */
export interface ResolvedRedriveOptions {
  jobIds: ReadonlySet<string> | undefined;
  limit: number;
  signal: AbortSignal | undefined;
  timeoutMs: number | undefined;
}

/** @throws {OrchestratorError} `invalid_argument` naming the bad option. @internal */
export function resolveRedriveOptions(options: RedriveOptions | undefined): ResolvedRedriveOptions {
  const o = checkObject("options", options ?? {});
  let jobIds: Set<string> | undefined;
  if (o.jobIds !== undefined) {
    if (!Array.isArray(o.jobIds)) throw invalidArgument("options.jobIds", "an array of job ids", o.jobIds);
    jobIds = new Set(o.jobIds.map((id, i) => checkString(`options.jobIds[${i}]`, id, 256)));
  }
  return {
    jobIds,
    limit: optional(o.limit, 1000, (v) => checkInteger("options.limit", v, 1, 1_000_000)),
    signal: checkSignal("options.signal", o.signal),
    timeoutMs: optional(o.timeoutMs, undefined, (v) => checkInteger("options.timeoutMs", v, 1)),
  };
}

/**
 * The ids of {@link JobQueue.discardDeadLetters}, checked once for every queue: an array of at
 * most 1000 non-empty strings. @throws {OrchestratorError} `invalid_argument`. @internal
 */
export function checkDeadLetterIds(ids: unknown): Set<string> {
  if (!Array.isArray(ids) || ids.length > 1000) throw invalidArgument("ids", "an array of at most 1000 dead-letter ids", ids);
  return new Set(ids.map((id, i) => checkString(`ids[${i}]`, id, 256)));
}

/** The `limit` of {@link JobQueue.deadLetters}, checked once for every queue. @internal */
export function deadLettersLimit(options: DeadLettersOptions | undefined): number {
  const o = checkObject("options", options ?? {});
  return optional(o.limit, 1000, (v) => checkInteger("options.limit", v, 1, 1_000_000));
}
