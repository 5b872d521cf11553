import { describe, expect, it } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { decodeEvents, EventBatcher } from "../../src/queue/amqp/event-batcher.ts";
import type { PublishRequest } from "../../src/queue/amqp/confirm-publisher.ts";
import type { JobEvent } from "../../src/job/types.ts";
import { eventRoutingKey } from "../../src/queue/amqp/topology.ts";
import { deferred, type Deferred } from "../../src/testing/deferred.ts";

/** A publish port that records each message and lets the test settle it. */
function recorder() {
  const sent: Array<{ request: PublishRequest; settle: Deferred<void> }> = [];
  const batcher = new EventBatcher({
    exchange: "jobs.events",
    publish: (request) => {
      const settle = deferred<void>();
      sent.push({ request, settle });
      return settle.promise;
    },
  });
  return { batcher, sent };
}

const running = (jobId: string): JobEvent => ({ kind: "state", state: "running", jobId, attempt: 1, at: 1, workerId: "w1" });
const result = (jobId: string): JobEvent => ({ kind: "result", jobId, attempt: 1, at: 2, outcome: { status: "completed", result: jobId } });
const add = (batcher: EventBatcher, event: JobEvent, options: { signal?: AbortSignal; timeoutMs?: number } = {}) =>
  batcher.add(event, eventRoutingKey(event.kind, event.jobId), event.kind === "result", options.signal, options.timeoutMs);
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
/** "ok" or the code a promise rejected with, once it settles. */
const outcome = (p: Promise<void>) => p.then(() => "ok", (e: unknown) => (e instanceof OrchestratorError ? e.code : String(e)));

describe("EventBatcher", () => {
  it("sends the events of one turn as one persistent confirmed message routed with every event's key, settling all with its confirm", async () => {
    const { batcher, sent } = recorder();
    const events = [running("a"), running("b"), result("a"), result("b"), running("c")];
    const outcomes = events.map((event) => outcome(add(batcher, event)));
    expect(sent).toHaveLength(0);
    await nextTurn();
    expect(sent).toHaveLength(1);
    const { request } = sent[0]!;
    expect(decodeEvents(request.body)).toEqual(events);
    expect(JSON.parse(request.body.toString())).toMatchObject({ v: 2 });
    expect(request.routingKey).toBe("state.a");
    expect(request.properties?.BCC).toEqual(["state.b", "result.a", "result.b", "state.c"]);
    expect(request).toMatchObject({ confirm: true, properties: { persistent: true } });
    sent[0]!.settle.resolve();
    expect(await Promise.all(outcomes)).toEqual(["ok", "ok", "ok", "ok", "ok"]);
  });

  it("sends a turn's only event as the event object itself (format 1), transient and unconfirmed when it asks for no confirm", async () => {
    const { batcher, sent } = recorder();
    void add(batcher, running("a"));
    await nextTurn();
    const { request } = sent[0]!;
    expect(JSON.parse(request.body.toString())).toEqual(running("a"));
    expect(request).toMatchObject({ routingKey: "state.a", confirm: false, properties: { persistent: false } });
    expect(request.properties?.BCC).toBeUndefined();
  });

  it("rejects every publish of a message the broker did not confirm with that error", async () => {
    const { batcher, sent } = recorder();
    const outcomes = [result("a"), result("b")].map((event) => outcome(add(batcher, event)));
    await nextTurn();
    sent[0]!.settle.reject(new OrchestratorError("unknown_outcome", "channel closed"));
    expect(await Promise.all(outcomes)).toEqual(["unknown_outcome", "unknown_outcome"]);
  });

  it("leaves out a publish whose signal fires before its message is written, and rejects one whose signal fires after at once", async () => {
    const { batcher, sent } = recorder();
    const early = new AbortController();
    const late = new AbortController();
    const dropped = outcome(add(batcher, result("a"), { signal: early.signal }));
    const kept = outcome(add(batcher, result("b"), { signal: late.signal }));
    early.abort(new OrchestratorError("canceled", "not wanted"));
    expect(await dropped).toBe("canceled");
    await nextTurn();
    expect(decodeEvents(sent[0]!.request.body)).toEqual([result("b")]);
    late.abort(new OrchestratorError("canceled", "gave up waiting"));
    expect(await kept).toBe("canceled");
    sent[0]!.settle.resolve(); // the late outcome changes nothing
  });

  it("does not mix publishes with different timeouts in one message, and keeps their order", async () => {
    const { batcher, sent } = recorder();
    void add(batcher, running("a"));
    void add(batcher, running("b"), { timeoutMs: 50 });
    void add(batcher, running("c"), { timeoutMs: 50 });
    await nextTurn();
    expect(sent.map((s) => [s.request.timeoutMs, decodeEvents(s.request.body).map((e) => e.jobId)])).toEqual([
      [undefined, ["a"]],
      [50, ["b", "c"]],
    ]);
  });

  it("starts a new message past 256 events, in order", async () => {
    const { batcher, sent } = recorder();
    for (let i = 0; i < 300; i++) void add(batcher, running(`job-${i}`));
    await nextTurn();
    expect(sent.map((s) => decodeEvents(s.request.body).length)).toEqual([256, 44]);
    expect(decodeEvents(sent[1]!.request.body)[0]!.jobId).toBe("job-256");
  });

  it("sends what is pending at once on flush()", () => {
    const { batcher, sent } = recorder();
    void add(batcher, result("a"));
    batcher.flush();
    expect(sent).toHaveLength(1);
  });
});

describe("decodeEvents", () => {
  it("reads format 1 (one event) and format 2 (several), and refuses a newer format naming its version", () => {
    expect(decodeEvents(Buffer.from(JSON.stringify(running("a"))))).toEqual([running("a")]);
    expect(decodeEvents(Buffer.from(JSON.stringify({ v: 2, events: [running("a"), result("a")] })))).toEqual([running("a"), result("a")]);
    expect(() => decodeEvents(Buffer.from(JSON.stringify({ v: 3, events: [] })))).toThrow(/format version 3 .*upgrade/);
    expect(() => decodeEvents(Buffer.from("not json"))).toThrow(/not valid JSON/);
  });
});

describe("AmqpEvents batchEvents option", () => {
  it("refuses a value that is not a boolean with invalid_argument naming the field", () => {
    expect(() => new AmqpEvents({ url: "amqp://127.0.0.1", batchEvents: "yes" as unknown as boolean })).toThrow(/`batchEvents`.*boolean/);
  });
});
