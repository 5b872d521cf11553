import { describe, expect, it } from "vitest";
import { parseEnvelope } from "../../src/job/envelope.ts";
import { startDeadlineOf } from "../../src/job/start-deadline.ts";

const base = { v: 1, id: "j1", type: "t", payload: null, attempt: 1, maxAttempts: 1, timeoutMs: 1000, createdAt: "2026-01-01T00:00:00.000Z" } as const;

describe("a job's due time on its envelope", () => {
  it("carries runAt as epoch milliseconds and refuses anything else, naming the field", () => {
    expect(parseEnvelope({ ...base, runAt: 1_800_000_000_000 }).runAt).toBe(1_800_000_000_000);
    expect(parseEnvelope(base).runAt).toBeUndefined();
    expect(() => parseEnvelope({ ...base, runAt: "2026-01-01T00:00:00Z" })).toThrow(/`runAt`/);
    expect(() => parseEnvelope({ ...base, runAt: -1 })).toThrow(/`runAt`/);
  });

  it("counts the start timeout from the due time when it comes after the submit", () => {
    const created = Date.parse(base.createdAt);
    expect(startDeadlineOf({ createdAt: base.createdAt, startTimeoutMs: 500 })).toBe(created + 500);
    expect(startDeadlineOf({ createdAt: base.createdAt, startTimeoutMs: 500, runAt: created + 7 * 86_400_000 })).toBe(created + 7 * 86_400_000 + 500);
    expect(startDeadlineOf({ createdAt: base.createdAt, startTimeoutMs: 500, runAt: created - 10 })).toBe(created + 500);
    const redrivenAt = "2026-03-01T00:00:00.000Z";
    expect(startDeadlineOf({ createdAt: base.createdAt, startTimeoutMs: 500, runAt: created + 1000, redrives: [{ attempts: 1, reason: "r", deadLetteredAt: redrivenAt, redrivenAt }] })).toBe(Date.parse(redrivenAt) + 500);
    expect(startDeadlineOf({ createdAt: base.createdAt, runAt: created + 1000 })).toBeUndefined();
  });
});
