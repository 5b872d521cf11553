import type { SerializedError } from "../errors.ts";
import type { QueueDepth } from "../queue/types.ts";
import type { AuditEntry, JobAttemptRecord, SavedFilter } from "../store/types.ts";
import type { ConsoleAttempt, ConsoleAuditEntry, ConsoleErrorInfo, ConsoleQueueDepth, ConsoleSavedFilter } from "./api-types.ts";

/**
 * Compile-time checks that the page's copies of SDK shapes (`api-types.ts` imports nothing, so
 * it cannot import them) stay what the SDK has: `npm run typecheck` fails when one drifts.
 * @internal
 */

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;

export type ApiTypesInStep = [
  Assert<Same<ConsoleAuditEntry, AuditEntry>>,
  Assert<Same<ConsoleSavedFilter, SavedFilter>>,
  Assert<Same<ConsoleQueueDepth, QueueDepth>>,
  Assert<SerializedError extends ConsoleErrorInfo ? true : false>,
  Assert<JobAttemptRecord extends ConsoleAttempt ? true : false>,
];
