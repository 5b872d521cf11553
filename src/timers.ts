/**
 * Timer arithmetic shared by every class that schedules: the longest delay `setTimeout` honours,
 * and the retry backoff curve.
 * @internal
 */

/**
 * The longest delay `setTimeout` honours (2^31 - 1 ms, about 24.8 days): Node fires a longer one
 * at once. Every option that becomes a timer is capped by it, and a longer deadline is re-armed.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** Exponential backoff: the delay before retry `attempt` (from 1), `base * factor^(n-1)` capped at `max`, ± `jitter` fraction. */
export function backoffDelay(attempt: number, options: { baseMs: number; maxMs: number; factor?: number; jitter?: number }, random = Math.random): number {
  const { baseMs, maxMs, factor = 2, jitter = 0.2 } = options;
  const raw = Math.min(maxMs, baseMs * factor ** Math.max(0, attempt - 1));
  const spread = raw * jitter;
  return Math.max(0, Math.round(raw - spread + random() * 2 * spread));
}
