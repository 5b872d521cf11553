import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { cancelError } from "../../src/signals.ts";
import { deferred } from "../../src/testing/deferred.ts";
import { latch } from "../../src/testing/latch.ts";
import { rejectionOf } from "../../src/testing/rejection-of.ts";
import { waitFor } from "../../src/testing/wait-for.ts";

describe("test kit helpers", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("deferred() settles once from outside and says so", async () => {
    const d = deferred<number>();
    expect(d.settled).toBe(false);
    d.resolve(1);
    d.resolve(2);
    d.reject(new Error("ignored"));
    expect(d.settled).toBe(true);
    expect(await d.promise).toBe(1);
  });

  it("latch() opens after count arrivals and ignores extra ones", async () => {
    const l = latch(2);
    const opened = l.wait();
    l.arrive();
    expect(l.remaining).toBe(1);
    l.arrive();
    l.arrive();
    expect(l.remaining).toBe(0);
    await opened;
    await latch(0).wait();
  });

  it("latch() wait rejects with deadline_exceeded naming the missing arrivals, from the time wait was called", async () => {
    const l = latch(3, 1000);
    l.arrive();
    await vi.advanceTimersByTimeAsync(5000); // no wait yet: nothing runs out
    const waiting = rejectionOf(l.wait());
    await vi.advanceTimersByTimeAsync(1000);
    const error = await waiting;
    expect(error.code).toBe("deadline_exceeded");
    expect(error.message).toContain("missing 2 of 3 arrivals after 1000 ms");
    const aborted = rejectionOf(l.wait({ signal: AbortSignal.abort(cancelError("requested")) }));
    expect((await aborted).code).toBe("canceled");
  });

  it("waitFor() resolves with the first usable value and times out naming what it waited for", async () => {
    let calls = 0;
    const found = waitFor(() => (++calls === 3 ? "value" : calls === 1 ? null : false), { intervalMs: 10 });
    await vi.advanceTimersByTimeAsync(20);
    expect(await found).toBe("value");
    const never = rejectionOf(
      waitFor(
        () => {
          throw new Error("not yet");
        },
        { timeoutMs: 100, what: "the broker" },
      ),
    );
    await vi.advanceTimersByTimeAsync(200);
    const error = await never;
    expect(error.code).toBe("deadline_exceeded");
    expect(error.message).toContain("the broker not reached within 100 ms");
    expect((error.cause as Error).message).toBe("not yet");
  });

  it("rejectionOf() fails the test when the promise resolves or rejects with a foreign error", async () => {
    await expect(rejectionOf(Promise.resolve(5))).rejects.toThrow("expected a rejection, got 5");
    await expect(rejectionOf(Promise.reject(new TypeError("boom")))).rejects.toThrow("expected an OrchestratorError");
  });
});
