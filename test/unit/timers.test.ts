import { describe, expect, it } from "vitest";
import { backoffDelay, MAX_TIMER_MS } from "../../src/timers.ts";

describe("timers", () => {
  it("MAX_TIMER_MS is the longest delay setTimeout honours", () => {
    expect(MAX_TIMER_MS).toBe(2 ** 31 - 1);
  });

  it("backoffDelay grows by the factor from the base and stops at the cap", () => {
    const flat = () => 0.5; // the middle of the jitter band: no spread
    const options = { baseMs: 100, maxMs: 1000 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, options, flat))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it("backoffDelay spreads by ± jitter around the curve and is never negative", () => {
    const options = { baseMs: 1000, maxMs: 1000, jitter: 0.2 };
    expect(backoffDelay(1, options, () => 0)).toBe(800);
    expect(backoffDelay(1, options, () => 1)).toBe(1200);
    expect(backoffDelay(1, { baseMs: 0, maxMs: 0 }, () => 0)).toBe(0);
  });
});
