import { describe, expect, it } from "vitest";
import type { JobEnvelope } from "../../src/job/envelope.ts";
import type { ConcurrencyStrategy } from "../../src/job/concurrency.ts";
import { KeyHolders } from "../../src/queue/key-holders.ts";

const job = (id: string, limit: number, strategy: ConcurrencyStrategy): JobEnvelope => ({
  v: 1, id, type: "t", payload: null, attempt: 1, maxAttempts: 1, timeoutMs: 1000, createdAt: "2026-01-01T00:00:00Z",
  concurrency: { key: "k", limit, strategy },
});
const fail = (error: unknown) => {
  throw error;
};

describe("KeyHolders: the one rule of the strategies", () => {
  it("hands out no more places than the cap, whatever limit a job carries", () => {
    const holders = new KeyHolders();
    holders.hold(job("a", 5, "wait"), undefined);
    holders.hold(job("b", 5, "wait"), undefined);
    expect(holders.decide(job("c", 5, "wait"), fail, 2)).toEqual({ kind: "wait" });
    expect(holders.decide(job("c", 5, "wait"), fail, 3)).toEqual({ kind: "deliver" });
    // A lower limit on the job next in line holds at once.
    expect(holders.decide(job("c", 1, "wait"), fail)).toEqual({ kind: "wait" });
  });

  it("cancel_running asks the oldest holder not yet asked, once per waiting job", () => {
    const asked: Array<[string, string]> = [];
    const hooks = { supersede: (holder: string, newer: JobEnvelope) => void asked.push([holder, newer.id]) };
    const holders = new KeyHolders();
    const a = holders.hold(job("a", 2, "cancel_running"), hooks);
    holders.hold(job("b", 2, "cancel_running"), hooks);
    expect(holders.decide(job("c", 2, "cancel_running"), fail)).toEqual({ kind: "wait" });
    expect(holders.decide(job("c", 2, "cancel_running"), fail)).toEqual({ kind: "wait" });
    expect(asked).toEqual([["a", "c"]]);
    holders.release(a);
    expect(holders.decide(job("c", 2, "cancel_running"), fail)).toEqual({ kind: "deliver" });
    holders.hold(job("c", 2, "cancel_running"), hooks);
    expect(holders.decide(job("d", 2, "cancel_running"), fail)).toEqual({ kind: "wait" });
    expect(asked).toEqual([["a", "c"], ["b", "d"]]);
  });

  it("drop_newest drops only while the key is full; a throwing hook is reported, not thrown", () => {
    const holders = new KeyHolders();
    expect(holders.decide(job("a", 1, "drop_newest"), fail)).toEqual({ kind: "deliver" });
    holders.hold(job("a", 1, "drop_newest"), { supersede: () => { throw new Error("boom"); } });
    expect(holders.decide(job("b", 1, "drop_newest"), fail)).toMatchObject({ kind: "drop", message: expect.stringContaining('"k" was at its limit of 1') });
    const reported: unknown[] = [];
    expect(holders.decide(job("c", 1, "cancel_running"), (e) => reported.push(e))).toEqual({ kind: "wait" });
    expect(reported).toHaveLength(1);
  });
});
