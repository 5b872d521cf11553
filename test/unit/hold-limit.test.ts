import { describe, expect, it } from "vitest";
import { holdLimitMs, holdLimitWarning } from "../../src/queue/amqp/hold-limit.ts";

describe("consumer_timeout hold limit", () => {
  it("leaves a margin of a tenth of consumerTimeoutMs, at most a minute, and none when it is off", () => {
    expect(holdLimitMs(1_800_000)).toBe(1_740_000);
    expect(holdLimitMs(100_000)).toBe(90_000);
    expect(holdLimitMs(0)).toBe(Infinity);
  });

  it("warns for JobClient's default one-hour timeout under RabbitMQ's default 30 minutes, naming the fix", () => {
    const warning = holdLimitWarning({ id: "build-1", timeoutMs: 3_600_000 }, 1_800_000);
    expect(warning).toMatchObject({
      code: "precondition_failed",
      details: { reason: "consumer_timeout_too_low", holdLimitMs: 1_740_000, suggestedConsumerTimeoutMs: 3_720_000 },
    });
    expect(warning?.message).toMatch(/consumer_timeout = 3720000/);
    expect(warning?.message).toMatch(/consumerTimeoutMs/);
    // the suggested broker timeout leaves room for the job
    expect(holdLimitMs(3_720_000)).toBeGreaterThanOrEqual(3_600_000);
  });

  it("says nothing for a job that fits, or when the broker's timeout is off", () => {
    expect(holdLimitWarning({ id: "a", timeoutMs: 1_740_000 }, 1_800_000)).toBeUndefined();
    expect(holdLimitWarning({ id: "a", timeoutMs: 2 ** 31 - 1 }, 0)).toBeUndefined();
  });
});
