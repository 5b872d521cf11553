import { createHash } from "node:crypto";
import { invalidArgument } from "../errors.ts";
import { checkInteger, checkKnownKeys, checkObject, checkString, optional } from "../validate.ts";

/** Every {@link ConcurrencyStrategy}, in one place: the spec check and the docs read this list. */
export const CONCURRENCY_STRATEGIES = ["wait", "cancel_running", "drop_newest"] as const;

/**
 * What happens to a job of a concurrency key that is at its limit:
 * - `wait`: it waits its turn, first in first out per key, outside every dispatcher's prefetch;
 * - `cancel_running`: the newest wins (GitHub Actions' `cancel-in-progress`): the oldest job
 *   holding the key is cancelled (reason `requested`, the message names the key and this job)
 *   and this one takes its place once it has stopped;
 * - `drop_newest`: this job is not run: it finishes `cancelled` (reason `requested`, the
 *   message says it was dropped and why).
 */
export type ConcurrencyStrategy = (typeof CONCURRENCY_STRATEGIES)[number];

/**
 * A job's concurrency key: at most `limit` jobs of one `key` are held by dispatchers (waiting for
 * a worker slot or running) at once, across every dispatcher of the queue.
 */
export interface JobConcurrency {
  /** Jobs with the same key share the limit, e.g. `"env:prod"`. 1 to 200 characters. */
  key: string;
  /** Most jobs of the key held at once (1 to 1000). */
  limit: number;
  /** What a job arriving while the key is at its limit does. */
  strategy: ConcurrencyStrategy;
}

/** Longest concurrency key, in characters. */
export const MAX_CONCURRENCY_KEY = 200;
/** Highest concurrency limit. */
export const MAX_CONCURRENCY_LIMIT = 1000;

const strategies: ReadonlySet<string> = new Set(CONCURRENCY_STRATEGIES);
const CONCURRENCY_FIELDS: ReadonlySet<string> = new Set(["key", "limit", "strategy"]);

/**
 * Checks a concurrency spec (`{ key, limit?, strategy? }`) and fills the defaults: `limit` 1,
 * `strategy` `"wait"`. Unknown fields are refused, naming them.
 * @throws {OrchestratorError} `invalid_argument` naming the first bad field.
 */
export function checkConcurrency(field: string, value: unknown): JobConcurrency {
  const o = checkObject(field, value);
  checkKnownKeys(`\`${field}\``, o, CONCURRENCY_FIELDS, `${field}.`);
  const key = checkString(`${field}.key`, o.key, MAX_CONCURRENCY_KEY);
  const limit = optional(o.limit, 1, (v) => checkInteger(`${field}.limit`, v, 1, MAX_CONCURRENCY_LIMIT));
  const strategy = optional(o.strategy, "wait" as ConcurrencyStrategy, (v) => {
    if (typeof v !== "string" || !strategies.has(v)) throw invalidArgument(`${field}.strategy`, `one of ${CONCURRENCY_STRATEGIES.join(", ")}`, v);
    return v as ConcurrencyStrategy;
  });
  return { key, limit, strategy };
}

/**
 * A short name for a key, safe in queue names and logs whatever characters the key has: the first
 * 20 characters of its SHA-256 in base64url (120 bits).
 */
export function concurrencyKeyHash(key: string): string {
  return createHash("sha256").update(key).digest("base64url").slice(0, 20);
}

/** The reason a job waiting for its key shows (state `queued`). */
export function keyWaitReason(c: JobConcurrency): string {
  return `waiting for concurrency key "${c.key}" (at most ${c.limit} at once)`;
}

/** The message of a job dropped by `drop_newest`. */
export function keyDroppedMessage(c: JobConcurrency): string {
  return `dropped: concurrency key "${c.key}" was at its limit of ${c.limit} (strategy drop_newest)`;
}

/** The message of a job cancelled by a newer one under `cancel_running`. */
export function keySupersededMessage(c: JobConcurrency, newerJobId: string): string {
  return `superseded by job ${newerJobId} on concurrency key "${c.key}" (strategy cancel_running)`;
}
