import { invalidArgument } from "../errors.ts";
import { checkInteger, checkKnownKeys, checkObject, checkString, knownKeys } from "../validate.ts";

/**
 * Where a job would rather run, and which rate limit it counts against: the job's own half of
 * placement (the workers' half is their labels; the limits themselves are the dispatcher's).
 * One home for the shapes and their checks, read by the spec, the envelope and the dispatcher.
 */

/** Highest weight of one preferred label (as Kubernetes' `preferredDuringScheduling`). */
export const MAX_PREFERRED_WEIGHT = 100;
/** Most preferred labels one job may name. */
const MAX_PREFERRED = 32;

/** A label a job would rather find on its worker, and how much it counts. */
export interface PreferredLabel {
  /** The value the label must have to count. */
  value: string;
  /**
   * What carrying it adds to a worker's score, 1 to 100.
   * @default 1
   */
  weight?: number;
}

/**
 * Stickiness to the worker that ran the previous job of the same key:
 * - `soft`: that worker if it has a free slot now, else the best other worker;
 * - `hard`: only that worker. The job waits for one of its slots while it is in the pool (also
 *   while it is unhealthy, saying so, until the start timeout); when it is draining, removed, or
 *   no longer serves the job, the job fails with `precondition_failed`
 *   (`details.reason` `"sticky_worker_gone"`), saying why.
 */
export type StickyMode = "soft" | "hard";

/** A job's placement wishes beyond its required `labels`. */
export interface JobAffinity {
  /**
   * Labels the job would rather find: among the free workers that qualify, it goes to the one
   * whose carried preferred labels weigh most (ties: the least recently leased).
   */
  preferred?: Record<string, PreferredLabel>;
  /**
   * Jobs of one key go to the worker that ran the previous job of the key (its build cache, its
   * loaded model). Remembered in the dispatcher's job store when it has one (every dispatcher
   * then knows), else in the dispatcher. A string of at most 512 characters.
   */
  stickyKey?: string;
  /**
   * How strict the stickiness is; needs `stickyKey`.
   * @default "soft"
   */
  sticky?: StickyMode;
}

const AFFINITY_FIELDS = knownKeys<JobAffinity>()(["preferred", "sticky", "stickyKey"], true);
const PREFERRED_FIELDS = knownKeys<PreferredLabel>()(["value", "weight"], true);

/** Which rate limit a job counts against, besides its type's. */
export interface JobRateLimit {
  /**
   * The key whose limit it counts against (`"tenant:acme"`); the limits are the dispatcher's
   * `rateLimits.keys`. A string of at most 512 characters.
   */
  key: string;
  /**
   * Tokens a start takes from the key's bucket (a big export may count as 10), 1 to 1000. A job
   * asking for more than its bucket's `burst` fails with `invalid_argument`.
   * @default 1
   */
  units?: number;
}

/**
 * Checks an untrusted `affinity` and returns a copy with each preferred label's weight filled.
 * `strict` (a spec) refuses unknown fields; an envelope's are dropped, so a newer producer's
 * additions do not dead-letter its jobs on an older dispatcher.
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 */
export function checkAffinity(field: string, value: unknown, strict = false): JobAffinity {
  const o = checkObject(field, value);
  if (strict) checkKnownKeys("the job spec", o, AFFINITY_FIELDS, `${field}.`);
  const affinity: JobAffinity = {};
  if (o.preferred !== undefined) {
    const preferred = checkObject(`${field}.preferred`, o.preferred);
    const names = Object.keys(preferred);
    if (names.length > MAX_PREFERRED) throw invalidArgument(`${field}.preferred`, `at most ${MAX_PREFERRED} labels`, `${names.length} labels`);
    affinity.preferred = {};
    for (const name of names) {
      const entry = checkObject(`${field}.preferred.${name}`, preferred[name]);
      if (strict) checkKnownKeys("the job spec", entry, PREFERRED_FIELDS, `${field}.preferred.${name}.`);
      const weight = entry.weight === undefined ? 1 : checkInteger(`${field}.preferred.${name}.weight`, entry.weight, 1, MAX_PREFERRED_WEIGHT);
      affinity.preferred[name] = { value: checkPreferredValue(`${field}.preferred.${name}.value`, entry.value), weight };
    }
  }
  if (o.stickyKey !== undefined) affinity.stickyKey = checkString(`${field}.stickyKey`, o.stickyKey, 512);
  if (o.sticky !== undefined) {
    if (o.sticky !== "soft" && o.sticky !== "hard") throw invalidArgument(`${field}.sticky`, '"soft" or "hard"', o.sticky);
    if (affinity.stickyKey === undefined) throw invalidArgument(`${field}.stickyKey`, `a sticky key (${field}.sticky needs one)`, o.stickyKey);
    affinity.sticky = o.sticky;
  }
  return affinity;
}

function checkPreferredValue(field: string, value: unknown): string {
  if (typeof value !== "string") throw invalidArgument(field, "a string", value);
  return value;
}

const RATE_LIMIT_FIELDS = knownKeys<JobRateLimit>()(["key", "units"], true);

/**
 * Checks an untrusted `rateLimit` (`strict`: refusing unknown fields, as for `checkAffinity`).
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 */
export function checkRateLimit(field: string, value: unknown, strict = false): JobRateLimit {
  const o = checkObject(field, value);
  if (strict) checkKnownKeys("the job spec", o, RATE_LIMIT_FIELDS, `${field}.`);
  const key = checkString(`${field}.key`, o.key, 512);
  return o.units === undefined ? { key } : { key, units: checkInteger(`${field}.units`, o.units, 1, 1000) };
}
