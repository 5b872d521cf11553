import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Metadata } from "@grpc/grpc-js";
import type { Client } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { ServingStatus, SessionResponseSchema, WorkerMessageSchema } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import type { OrchestratorMessage, SessionRequest } from "../../src/gen/blacktree/orchestrator/v1/worker_pb.ts";
import { ClientSession, IDLE_PING_PERIODS } from "../../src/transport/grpc/client-session.ts";

const PERIOD_MS = 100;
const TIMEOUT_MS = 400;

/** The session's stream as a fake grpc-js call: what the session writes, stamped with the (fake) time. */
function fakeSession(thinIdlePings: boolean) {
  const openedAt = Date.now();
  const call = Object.assign(new EventEmitter(), {
    written: [] as Array<{ at: number; message: OrchestratorMessage }>,
    write(request: SessionRequest) {
      for (const message of request.messages) call.written.push({ at: Date.now(), message });
      return true;
    },
    cancel() {},
  });
  const client = { makeBidiStreamRequest: () => call } as unknown as Client;
  const session = new ClientSession({
    client,
    metadata: () => new Metadata(),
    pingIntervalMs: PERIOD_MS,
    pingTimeoutMs: TIMEOUT_MS,
    thinIdlePings,
    connectTimeoutMs: 5000,
    flushMode: "none",
    maxMessageBytes: 1024 * 1024,
    onReady: () => {},
    onClosed: () => {},
  });
  const reply = (...messages: NonNullable<MessageInitShape<typeof WorkerMessageSchema>["kind"]>[]) => call.emit("data", create(SessionResponseSchema, { messages: messages.map((kind) => ({ kind })) }));
  /** Pings written so far, with the time each went out (ms since the session opened). */
  const pings = () => call.written.flatMap(({ at, message }) => (message.kind.case === "ping" ? [{ at: at - openedAt, seq: message.kind.value.seq }] : []));
  /** Answers every Ping at once, as a live worker would. */
  const answerPings = () => {
    let answered = 0;
    call.write = (request: SessionRequest) => {
      for (const message of request.messages) {
        call.written.push({ at: Date.now(), message });
        if (message.kind.case === "ping") {
          answered += 1;
          const seq = message.kind.value.seq;
          queueMicrotask(() => reply({ case: "pong", value: { seq, status: ServingStatus.SERVING } }));
        }
      }
      return true;
    };
    return () => answered;
  };
  session.open();
  reply({ case: "hello", value: {} });
  return { session, call, reply, pings, answerPings };
}

function gaps(times: number[]): number[] {
  return times.slice(1).map((at, i) => at - times[i]!);
}

describe("ClientSession pings", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("pings every period until idle for pingTimeoutMs, then every IDLE_PING_PERIODS periods while the keepalive vouches", async () => {
    const { session, pings, answerPings } = fakeSession(true);
    answerPings();
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS + 4 * IDLE_PING_PERIODS * PERIOD_MS);
    const times = pings().map((p) => p.at);
    const busy = times.filter((at) => at <= TIMEOUT_MS);
    expect(gaps(busy).every((gap) => gap === PERIOD_MS)).toBe(true);
    const idle = times.filter((at) => at > TIMEOUT_MS);
    expect(idle.length).toBeGreaterThanOrEqual(3);
    expect(gaps(idle).every((gap) => gap === IDLE_PING_PERIODS * PERIOD_MS)).toBe(true);
    expect(session.serving).toBe("serving");
    session.close(new OrchestratorError("canceled", "test over"));
  });

  it("pings every period while idle when the keepalive does not cover the gap", async () => {
    const { pings, answerPings } = fakeSession(false);
    answerPings();
    await vi.advanceTimersByTimeAsync(3000);
    const times = pings().map((p) => p.at);
    expect(times.length).toBe(3000 / PERIOD_MS);
    expect(gaps(times).every((gap) => gap === PERIOD_MS)).toBe(true);
  });

  it("sends a Ping ahead of the first Assign of a thinned session and the next as soon as it is answered, then every period while busy", async () => {
    const { session, call, pings, reply } = fakeSession(true);
    // Answered by hand, so the order of what goes out is visible.
    const answer = () => {
      const last = pings().at(-1)!;
      reply({ case: "pong", value: { seq: last.seq, status: ServingStatus.SERVING } });
    };
    for (let t = 0; t < 1500; t += PERIOD_MS) {
      await vi.advanceTimersByTimeAsync(PERIOD_MS);
      if (call.written.at(-1)?.message.kind.case === "ping") answer();
    }
    const before = call.written.length;
    const idleSince = pings().at(-1)!.at;
    expect(1500 - idleSince).toBeLessThan(IDLE_PING_PERIODS * PERIOD_MS);
    const signal = new AbortController().signal;
    const result = session.execute({ jobId: "j", type: "noop", payload: null, attempt: 1, deadline: Date.now() + 60_000 }, new Uint8Array([110, 117, 108, 108]), { signal, onEvent: () => {} });
    const sent = call.written.slice(before).map(({ message }) => message.kind.case);
    expect(sent).toEqual(["ping", "assign"]);
    answer();
    // The Pong brings the next Ping at once (no timer ran), the worker's fresh round trip.
    expect(call.written.slice(before).map(({ message }) => message.kind.case)).toEqual(["ping", "assign", "ping"]);
    answer();
    // Busy: a Ping every period again.
    const busyFrom = pings().length;
    for (let i = 0; i < 5; i++) {
      await vi.advanceTimersByTimeAsync(PERIOD_MS);
      answer();
    }
    expect(pings().length - busyFrom).toBe(5);
    reply({ case: "result", value: { jobId: "j", attempt: 1, outcome: { case: "value", value: new Uint8Array([110, 117, 108, 108]) } } });
    await expect(result).resolves.toBeNull();
  });

  it("closes a session whose Ping goes unanswered for pingTimeoutMs, idle or not", async () => {
    const { session, pings } = fakeSession(true);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS + 3 * PERIOD_MS);
    expect(pings().length).toBe(1);
    expect(session.state).toBe("closed");
  });
});
