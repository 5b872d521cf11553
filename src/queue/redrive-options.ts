import { invalidArgument } from "../errors.ts";
import { checkInteger, checkObject, checkSignal, checkString, optional } from "../validate.ts";
import type { RedriveOptions } from "./types.ts";

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
