import { describe, expect, it } from "vitest";
import { MAX_DELAY_MS } from "../../src/job/due-time.ts";
import {
  DELAY_LEVELS, delayDestinationWord, delayEntryLevel, delayLevelBindingKey, delayRoutingKey, resolveTopologyNames, topologyObjects,
} from "../../src/queue/amqp/topology.ts";

/** RabbitMQ's topic matching: `*` is exactly one word, `#` zero or more. */
function topicMatches(pattern: string, key: string): boolean {
  const p = pattern.split(".");
  const k = key.split(".");
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === "#") return match(i + 1, j) || (j < k.length && match(i, j + 1));
    return j < k.length && (p[i] === "*" || p[i] === k[j]) && match(i + 1, j + 1);
  };
  return match(0, 0);
}

/**
 * Walks a message through the cascade as the broker would, with the real binding keys: from the
 * entry level's exchange down to the due exchange, summing the TTLs of the queues it waits in.
 */
function walk(delayMs: number, destination: string, others: string[] = []): { waitedMs: number; hops: number; reached: string[] } {
  const key = delayRoutingKey(delayMs, destination);
  let waitedMs = 0;
  let hops = 0;
  for (let level = delayEntryLevel(delayMs); level >= 0; level--) {
    const intoQueue = topicMatches(delayLevelBindingKey(level, 1), key);
    const onward = topicMatches(delayLevelBindingKey(level, 0), key);
    // Exactly one of the two bindings of a level takes the message: it is never lost nor copied.
    expect(intoQueue !== onward).toBe(true);
    if (intoQueue) {
      waitedMs += 2 ** level;
      hops++;
    }
  }
  const reached = [destination, ...others].filter((d) => topicMatches(`#.${delayDestinationWord(d)}`, key));
  return { waitedMs, hops, reached };
}

describe("the delay cascade's routing", () => {
  it("waits exactly the delay, to the millisecond, for delays from 1 ms to 90 days", () => {
    const delays = [1, 2, 3, 7, 999, 1000, 1001, 60_000, 120_000, 3_600_000, 86_400_000, 14 * 86_400_000, MAX_DELAY_MS, 2 ** 33 - 1];
    let seed = 42;
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      delays.push(1 + Math.floor((seed / 2 ** 31) * MAX_DELAY_MS));
    }
    for (const delayMs of delays) {
      const { waitedMs, hops } = walk(delayMs, "builds");
      expect(waitedMs).toBe(delayMs);
      // One queue per set bit: the only places a message waits (and pays a hop's overhead).
      expect(hops).toBe(delayMs.toString(2).replaceAll("0", "").length);
    }
  });

  it("enters at the level of the delay's highest bit and covers 90 days with 33 levels", () => {
    expect(delayEntryLevel(1)).toBe(0);
    expect(delayEntryLevel(2)).toBe(1);
    expect(delayEntryLevel(1023)).toBe(9);
    expect(delayEntryLevel(1024)).toBe(10);
    expect(delayEntryLevel(2 ** 33 - 1)).toBe(32);
    expect(2 ** DELAY_LEVELS).toBeGreaterThan(MAX_DELAY_MS);
    expect(delayEntryLevel(MAX_DELAY_MS)).toBeLessThan(DELAY_LEVELS);
  });

  it("delivers to its own destination only (the job queue, a lane, the cancels exchange)", () => {
    const all = ["builds", "builds.p1", "builds.p9", "builds.cancels"];
    for (const destination of all) {
      const { reached } = walk(12_345, destination, all.filter((d) => d !== destination));
      expect(reached).toEqual([destination]);
    }
  });

  it("keeps routing keys under AMQP's 255 bytes, hashing destinations that are long or not topic-safe", () => {
    const long = `q-${"x".repeat(240)}`;
    for (const destination of [long, "jobs with spaces", "a.#.b", "ünïcode"]) {
      const word = delayDestinationWord(destination);
      expect(word).toMatch(/^~[A-Za-z0-9_-]{32}$/);
      expect(Buffer.byteLength(delayRoutingKey(MAX_DELAY_MS, destination))).toBeLessThanOrEqual(255);
      expect(walk(5000, destination).reached).toEqual([destination]);
    }
    expect(Buffer.byteLength(delayRoutingKey(MAX_DELAY_MS, "q".repeat(180)))).toBeLessThanOrEqual(255);
  });

  it("lists every object a deployment may declare, the cascade's included, for whoever removes them", () => {
    const { queues, exchanges } = topologyObjects(resolveTopologyNames("builds", undefined));
    expect(queues).toEqual(expect.arrayContaining(["builds", "builds.dead", "builds.cancels.log", "builds.delay.1ms", "builds.delay.4294967296ms"]));
    expect(queues.filter((name) => /^builds\.delay\.\d+ms$/.test(name))).toHaveLength(DELAY_LEVELS);
    expect(queues).toContain("builds.delay.1024ms");
    expect(exchanges).toContain("builds.events");
    expect(exchanges).toContain("builds.delay.level.32");
    expect(exchanges).toContain("builds.delay.due");
  });
});
