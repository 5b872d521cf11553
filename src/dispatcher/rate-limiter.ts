import { invalidArgument } from "../errors.ts";
import type { JobEnvelope } from "../job/envelope.ts";
import { delay } from "../signals.ts";
import { MAX_TIMER_MS } from "../timers.ts";
import { checkTokenBucketLimit, fullBucket, takeFromBucket, type BucketState, type TokenBucketLimit, type TokenTake } from "../store/token-bucket.ts";
import type { JobStore } from "../store/types.ts";
import { type Logger, logSafely } from "../telemetry/logger.ts";
import { checkBoolean, checkInteger, checkKnownKeys, checkObject, knownKeys, optional } from "../validate.ts";
import type { DispatcherReport } from "./context.ts";
import type { RateLimitOptions, RateLimitsOptions } from "./types.ts";

const RATE_LIMITS_FIELDS = knownKeys<RateLimitsOptions>()(["keys", "maxHoldMs", "types"], true);
const RATE_LIMIT_FIELDS = knownKeys<RateLimitOptions>()(["burst", "intervalMs", "max", "shared"], true);

/** One token bucket a job takes from: its type's, or its key's. @internal */
export interface Bucket {
  /** The bucket's name where it is kept: `type:<job type>` or `key:<rate-limit key>`. */
  readonly name: string;
  readonly limit: TokenBucketLimit;
  readonly shared: boolean;
  /** Tokens a start takes from it: the job's `rateLimit.units` for its key's bucket, else 1. */
  readonly units: number;
}

/** A configured limit, before a key pattern is applied. */
interface Rule {
  readonly limit: TokenBucketLimit;
  readonly shared: boolean;
}

/** Resolved `rateLimits` option. @internal */
export interface ResolvedRateLimits {
  readonly types: ReadonlyMap<string, Rule>;
  readonly keys: ReadonlyMap<string, Rule>;
  /** Key patterns (`tenant:*`): prefix and rule, the longest prefix first. */
  readonly patterns: ReadonlyArray<readonly [string, Rule]>;
  readonly maxHoldMs: number;
}

/** Why a job was held back past the hold bound: the bucket that refused, and when to come back. @internal */
export interface Refusal {
  readonly waitMs: number;
  readonly reason: string;
}

/** A take's answer; `failed` when the store could not be asked. */
type Take = TokenTake & { failed?: boolean };

/** Local buckets kept before full ones are dropped (a full bucket is the same as none). */
const LOCAL_BUCKETS_SWEEP_AT = 10_000;

/** How long to wait before asking a shared bucket again when the store failed. */
const STORE_RETRY_MS = 1000;

function checkRule(field: string, value: unknown, store: JobStore | undefined): Rule {
  const o = checkObject(field, value);
  checkKnownKeys("the dispatcher options", o, RATE_LIMIT_FIELDS, `${field}.`);
  const limit = checkTokenBucketLimit(field, o);
  const shared = optional(o.shared, false, (v) => checkBoolean(`${field}.shared`, v));
  if (shared && store?.takeTokens === undefined) {
    throw invalidArgument(`${field}.shared`, "a `store` with takeTokens() (MemoryJobStore, PostgresJobStore) to keep the shared bucket in", store === undefined ? "no store" : "a store without takeTokens()");
  }
  return { limit, shared };
}

/**
 * Checks the dispatcher's `rateLimits` option.
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 * @internal
 */
export function resolveRateLimits(value: unknown, store: JobStore | undefined): ResolvedRateLimits | undefined {
  if (value === undefined) return undefined;
  const o = checkObject("rateLimits", value);
  checkKnownKeys("the dispatcher options", o, RATE_LIMITS_FIELDS, "rateLimits.");
  const types = new Map<string, Rule>();
  const keys = new Map<string, Rule>();
  const patterns: Array<readonly [string, Rule]> = [];
  for (const [type, rule] of Object.entries(checkObject("rateLimits.types", o.types ?? {}))) types.set(type, checkRule(`rateLimits.types.${type}`, rule, store));
  for (const [key, rule] of Object.entries(checkObject("rateLimits.keys", o.keys ?? {}))) {
    const checked = checkRule(`rateLimits.keys.${key}`, rule, store);
    if (key.endsWith("*")) patterns.push([key.slice(0, -1), checked]);
    else keys.set(key, checked);
  }
  patterns.sort((a, b) => b[0].length - a[0].length);
  const maxHoldMs = optional(o.maxHoldMs, 1000, (v) => checkInteger("rateLimits.maxHoldMs", v, 0, MAX_TIMER_MS));
  return { types, keys, patterns, maxHoldMs };
}

/**
 * The rate limits of one dispatcher: which buckets a job takes a token from (its type's, its
 * key's), and taking them. A bucket is this dispatcher's own (`shared: false`, kept here) or
 * shared by every dispatcher of the job store (`shared: true`, a row of the store taken with one
 * atomic statement per start). A job takes one token from each of its buckets, all or none (a
 * token taken before another bucket refused is given back).
 *
 * A job held back by a limit holds no worker slot: the dispatcher asks for tokens only once a
 * slot fit for the job is free, and leases it after. It holds its delivery (a prefetch slot) at
 * most `maxHoldMs`: when the tokens come later than that, {@link RateLimiter.admit} answers a
 * {@link Refusal} and the job goes back to the queue until about then, saying why.
 * @internal
 */
export class RateLimiter {
  readonly #limits: ResolvedRateLimits;
  readonly #store: JobStore | undefined;
  readonly #timeoutMs: number;
  readonly #report: DispatcherReport;
  readonly #logger: Logger | undefined;
  readonly #local = new Map<string, { state: BucketState; limit: TokenBucketLimit }>();
  /** Local buckets at which the next sweep runs: twice what a sweep leaves, so sweeps stay amortised O(1). */
  #sweepAt = LOCAL_BUCKETS_SWEEP_AT;
  /** Keys jobs named that no limit covers, each logged once. */
  readonly #unknownKeys = new Set<string>();

  constructor(limits: ResolvedRateLimits, store: JobStore | undefined, storeTimeoutMs: number, report: DispatcherReport, logger: Logger | undefined) {
    this.#limits = limits;
    this.#store = store;
    this.#timeoutMs = storeTimeoutMs;
    this.#report = report;
    this.#logger = logger;
  }

  /** The buckets `job` takes from; undefined when no limit covers it (the common case: two map lookups). */
  bucketsOf(job: JobEnvelope): Bucket[] | undefined {
    let buckets: Bucket[] | undefined;
    const typeRule = this.#limits.types.get(job.type);
    if (typeRule !== undefined) buckets = [{ name: `type:${job.type}`, ...typeRule, units: 1 }];
    const key = job.rateLimit?.key;
    if (key !== undefined) {
      const keyRule = this.#limits.keys.get(key) ?? this.#limits.patterns.find(([prefix]) => key.startsWith(prefix))?.[1];
      if (keyRule !== undefined) (buckets ??= []).push({ name: `key:${key}`, ...keyRule, units: job.rateLimit?.units ?? 1 });
      else if (!this.#unknownKeys.has(key) && this.#unknownKeys.size < 1000) {
        this.#unknownKeys.add(key);
        if (this.#logger !== undefined) {
          logSafely(this.#logger, "warn", { rateLimitKey: key, jobId: job.id }, `rate-limit key ${key} has no limit on this dispatcher: its jobs are not held back`);
        }
      }
    }
    return buckets;
  }

  /**
   * Why `buckets` can never admit their job (it asks a bucket for more tokens than the bucket
   * holds), or undefined.
   */
  never(buckets: readonly Bucket[]): string | undefined {
    const bucket = buckets.find((b) => b.units > b.limit.burst);
    if (bucket === undefined) return undefined;
    return `rate limit \`${bucket.name}\` holds at most ${bucket.limit.burst} tokens, and the job takes ${bucket.units} (its rateLimit.units): it can never start`;
  }

  /**
   * Takes each bucket's tokens, waiting here for them while the wait stays within `maxHoldMs`
   * in all; resolves undefined once every bucket granted them, or with a {@link Refusal} when
   * they come later than that. Check {@link RateLimiter.never} first.
   * @throws the signal's reason when it fires while waiting.
   */
  async admit(buckets: readonly Bucket[], signal: AbortSignal, jobId: string): Promise<Refusal | undefined> {
    const startedAt = Date.now();
    for (;;) {
      let refused: { bucket: Bucket; take: Take } | undefined;
      const taken: Bucket[] = [];
      for (const bucket of buckets) {
        const take = await this.#take(bucket, bucket.units, jobId);
        if (!take.granted) {
          refused = { bucket, take };
          break;
        }
        taken.push(bucket);
      }
      if (refused === undefined) return undefined;
      for (const bucket of taken) void this.#take(bucket, -bucket.units, jobId);
      const waitMs = Math.max(1, refused.take.waitMs);
      if (Date.now() - startedAt + waitMs > this.#limits.maxHoldMs) {
        return { waitMs, reason: describe(refused.bucket, waitMs, refused.take.failed === true) };
      }
      await delay(waitMs, { signal });
    }
  }

  /**
   * Drops the local buckets that have refilled (a full bucket is the same as none), so keys by
   * pattern (`tenant:*`) do not grow the map without bound.
   */
  #sweep(now: number): void {
    for (const [name, { state, limit }] of this.#local) {
      if (state.tokens + Math.max(0, now - state.updatedAt) * (limit.max / limit.intervalMs) >= limit.burst) this.#local.delete(name);
    }
    this.#sweepAt = Math.max(LOCAL_BUCKETS_SWEEP_AT, 2 * this.#local.size);
  }

  async #take(bucket: Bucket, units: number, jobId: string): Promise<Take> {
    if (!bucket.shared) {
      const now = Date.now();
      let local = this.#local.get(bucket.name);
      if (local === undefined) {
        if (this.#local.size >= this.#sweepAt) this.#sweep(now);
        this.#local.set(bucket.name, (local = { state: fullBucket(bucket.limit, now), limit: bucket.limit }));
      }
      return takeFromBucket(local.state, bucket.limit, units, now);
    }
    try {
      return await (this.#store as Required<Pick<JobStore, "takeTokens">>).takeTokens(bucket.name, bucket.limit, units, { timeoutMs: this.#timeoutMs });
    } catch (error) {
      this.#report(error, `taking a token of the shared rate limit ${bucket.name} (the job waits)`, jobId);
      // A token that could not be given back is lost: the limit errs on the slow side.
      return { granted: units < 0, waitMs: STORE_RETRY_MS, failed: true };
    }
  }
}

/** The reason a held-back job shows: which limit, and when it may start. */
function describe(bucket: Bucket, waitMs: number, storeFailed: boolean): string {
  const { max, intervalMs, burst } = bucket.limit;
  const rule = `${max} per ${intervalMs} ms${burst === max ? "" : `, burst ${burst}`}${bucket.shared ? ", shared" : ""}`;
  if (storeFailed) return `rate limit \`${bucket.name}\` (${rule}): its shared bucket cannot be read (job store unavailable); trying again in ${waitMs} ms`;
  return `rate limit \`${bucket.name}\` (${rule}): next start in ${waitMs} ms`;
}
