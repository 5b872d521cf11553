import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AssignGate, stallMsFor } from "../../src/worker/assign-gate.ts";

let clock = 0;
let started: string[];

beforeEach(() => {
  vi.useFakeTimers();
  clock = 0;
  started = [];
});
afterEach(() => {
  vi.useRealTimers();
});

function gate(stallMs: number | undefined): AssignGate<string> {
  return new AssignGate<string>({ stallMs, now: () => clock, start: (item) => started.push(item) });
}

/** Runs the pending setImmediate callbacks (the end of the current socket read). */
function endOfRead(): void {
  vi.advanceTimersToNextTimer();
}

describe("AssignGate", () => {
  it("starts the assigns of one read at setImmediate, in order, never synchronously", () => {
    const g = gate(1500);
    g.hold("a");
    g.hold("b");
    expect(started).toEqual([]);
    endOfRead();
    expect(started).toEqual(["a", "b"]);
    expect(g.size).toBe(0);
  });

  it("never starts an assign whose cancel or stream reset came in the same read", () => {
    const g = gate(1500);
    g.hold("cancelled");
    g.hold("kept");
    expect(g.drop((item) => item === "cancelled")).toBe(1);
    endOfRead();
    expect(started).toEqual(["kept"]);
    g.hold("reset");
    g.close();
    g.hold("after");
    vi.runAllTimers();
    expect(started).toEqual(["kept"]);
    expect(g.size).toBe(0);
  });

  it("holds assigns while the last ping is older than stallMs, until a ping sent after the orchestrator got the pong to the first one since", () => {
    const g = gate(1500);
    g.ping(1);
    clock = 1000;
    g.ping(2);
    clock = 2600; // silent for 1600 ms: the orchestrator may have declared the session lost
    g.hold("a");
    endOfRead();
    expect(started).toEqual([]);
    expect(g.stalled).toBe(true);
    clock = 2610;
    g.ping(3); // may have been buffered during the stall: answered, but proves nothing
    vi.runAllTimers();
    expect(started).toEqual([]);
    g.hold("b");
    clock = 2620;
    g.ping(4); // sent only once the orchestrator had the pong to 3
    expect(started).toEqual([]);
    endOfRead();
    expect(started).toEqual(["a", "b"]);
    expect(g.stalled).toBe(false);
  });

  it("holds assigns that come behind a ping which arrived more than stallMs after the one before it", () => {
    const g = gate(1500);
    g.ping(1);
    clock = 4000; // a frozen worker thaws and reads the ping and the assign buffered meanwhile
    g.ping(2);
    g.hold("a");
    endOfRead();
    expect(started).toEqual([]);
    clock = 4005;
    g.ping(3);
    endOfRead();
    expect(started).toEqual(["a"]);
  });

  it("holds an assign when the worker stalled between receiving and starting it", () => {
    const g = gate(1500);
    clock = 1000;
    g.ping(1);
    g.hold("a");
    clock = 2600;
    endOfRead();
    expect(started).toEqual([]);
    expect(g.stalled).toBe(true);
  });

  it("a stall seen again before the fresh round trip completes restarts the wait", () => {
    const g = gate(1500);
    clock = 2000;
    g.hold("a");
    endOfRead();
    g.ping(7);
    clock = 4000;
    g.ping(8); // came 2000 ms after 7: this is the new first ping, not the proof
    endOfRead();
    expect(started).toEqual([]);
    clock = 4010;
    g.ping(9);
    endOfRead();
    expect(started).toEqual(["a"]);
  });

  it("drops what it holds when the session ends while stalled", () => {
    const g = gate(1500);
    clock = 2000;
    g.hold("a");
    endOfRead();
    g.ping(1);
    g.close();
    g.ping(2);
    vi.runAllTimers();
    expect(started).toEqual([]);
    expect(g.size).toBe(0);
  });

  it("only defers when the orchestrator announced no ping timing", () => {
    const g = gate(undefined);
    clock = 60_000;
    g.hold("a");
    endOfRead();
    expect(started).toEqual(["a"]);
    expect(g.stalled).toBe(false);
  });

  it("puts the stall threshold halfway between the ping period and the ping timeout", () => {
    expect(stallMsFor(1000, 2000)).toBe(1500);
    expect(stallMsFor(100, 400)).toBe(250);
    // An interval not below the timeout: the orchestrator pings twice per timeout.
    expect(stallMsFor(5000, 2000)).toBe(1500);
  });
});
