import { invalidArgument } from "../errors.ts";
import { checkInteger, checkObject, optional } from "../validate.ts";

/**
 * The token bucket behind rate limits, in one home: the dispatcher's local buckets and
 * `MemoryJobStore` run {@link takeFromBucket}; `PostgresJobStore` runs the same arithmetic in one
 * SQL statement (`TAKE_TOKEN_SQL` there).
 *
 * A bucket holds at most `burst` tokens and gains `max` per `intervalMs`, continuously; a start
 * takes one. So in any span of `t` ms at most `burst + max × t / intervalMs` jobs start (a full
 * bucket's burst, then the rate).
 */

/** A rate limit: `max` starts per `intervalMs`, at most `burst` at once. */
export interface TokenBucketLimit {
  /** Tokens gained per `intervalMs`: the sustained rate. An integer >= 1. */
  readonly max: number;
  /** The interval `max` is counted over, in milliseconds. An integer >= 1. */
  readonly intervalMs: number;
  /** Most tokens the bucket holds: how many may start at once after a quiet spell. @default max */
  readonly burst: number;
}

/** A bucket's state: its tokens when last touched, and when. */
export interface BucketState {
  tokens: number;
  /** Epoch ms. */
  updatedAt: number;
}

/** The answer to a take: granted, or how long until enough tokens are there at this rate. */
export interface TokenTake {
  granted: boolean;
  /** When not granted: milliseconds until the tokens asked for are there (0 when granted). */
  waitMs: number;
}

/**
 * Checks an untrusted limit (`burst` defaults to `max`).
 * @throws {OrchestratorError} `invalid_argument` naming the bad field.
 */
export function checkTokenBucketLimit(field: string, value: unknown): TokenBucketLimit {
  const o = checkObject(field, value);
  const max = checkInteger(`${field}.max`, o.max, 1);
  const intervalMs = checkInteger(`${field}.intervalMs`, o.intervalMs, 1);
  const burst = optional(o.burst, max, (v) => checkInteger(`${field}.burst`, v, 1));
  return { max, intervalMs, burst };
}

/**
 * Takes `units` tokens from `state` at `now` (a negative `units` gives tokens back, up to
 * `burst`), changing `state` in place; a missing state is a full bucket.
 * @throws {OrchestratorError} `invalid_argument` when `units` exceeds `burst` (it could never be granted).
 */
export function takeFromBucket(state: BucketState, limit: TokenBucketLimit, units: number, now: number): TokenTake {
  if (units > limit.burst) throw invalidArgument("units", `at most the bucket's burst (${limit.burst})`, units);
  const rate = limit.max / limit.intervalMs;
  const available = Math.min(limit.burst, state.tokens + Math.max(0, now - state.updatedAt) * rate);
  state.updatedAt = Math.max(state.updatedAt, now);
  if (available >= units) {
    state.tokens = Math.min(limit.burst, available - units);
    return { granted: true, waitMs: 0 };
  }
  state.tokens = available;
  return { granted: false, waitMs: Math.ceil((units - available) / rate) };
}

/** A full bucket, as a key is first seen. */
export function fullBucket(limit: TokenBucketLimit, now: number): BucketState {
  return { tokens: limit.burst, updatedAt: now };
}
