import { EventEmitter } from "node:events";
import type { ConfirmChannel } from "amqplib";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OrchestratorError } from "../../src/errors.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { ConfirmPublisher } from "../../src/queue/amqp/confirm-publisher.ts";
import type { PublishRequest } from "../../src/queue/amqp/confirm-publisher.ts";
import { fromAmqpError } from "../../src/queue/amqp/errors.ts";
import { eventRoutingKey, jobBindingKey, jobKey, resolveTopologyNames } from "../../src/queue/amqp/topology.ts";

const url = "amqp://guest:guest@127.0.0.1:5672";

/** The code a call threw (sync or async), or "ok". */
async function codeOf(run: () => unknown): Promise<string> {
  try {
    await run();
    return "ok";
  } catch (error) {
    return error instanceof OrchestratorError ? error.code : `not an OrchestratorError: ${String(error)}`;
  }
}

/** A confirm channel that records publishes and lets the test confirm, nack, return or fill the socket. */
class FakeChannel extends EventEmitter {
  readonly published: Array<{ routingKey: string; body: string; messageId?: string; confirm?: (error: unknown) => void }> = [];
  writable = true;

  publish(_exchange: string, routingKey: string, body: Buffer, properties: { messageId?: string } = {}, confirm?: (error: unknown) => void): boolean {
    this.published.push({ routingKey, body: body.toString(), ...(properties.messageId ? { messageId: properties.messageId } : {}), ...(confirm ? { confirm } : {}) });
    return this.writable;
  }

  asChannel(): ConfirmChannel {
    return this as unknown as ConfirmChannel;
  }
}

const request = (body: string, extra: Partial<PublishRequest> = {}): PublishRequest => ({
  exchange: "",
  routingKey: "jobs",
  body: Buffer.from(body),
  confirm: true,
  mandatory: true,
  ...extra,
});

describe("AmqpQueue / AmqpEvents / AmqpConnection options", () => {
  it("refuse bad options with invalid_argument naming the field, before any I/O", async () => {
    expect(await codeOf(() => new AmqpQueue({}))).toBe("invalid_argument");
    expect(() => new AmqpQueue({})).toThrow(/`url`/);
    expect(() => new AmqpQueue({ url: "http://localhost" })).toThrow(/`url` to start with amqp:\/\/ or amqps:\/\//);
    expect(() => new AmqpQueue({ url, deliveryLimit: 0 })).toThrow(/`deliveryLimit` to be an integer from 1 to 10000, got `0`/);
    // Removed, refused rather than ignored: delays are exact now.
    expect(() => new AmqpQueue({ url, delayLevelsMs: [100] } as never)).toThrow(/`delayLevelsMs` was removed: delays and retry backoffs are exact/);
    expect(() => new AmqpQueue({ url, heartbeatSec: 1.5 })).toThrow(/`heartbeatSec`/);
    expect(() => new AmqpQueue({ url, reconnect: { baseDelayMs: 500, maxDelayMs: 100 } })).toThrow(/`reconnect.maxDelayMs` to be an integer from 500/);
    expect(() => new AmqpEvents({ url, eventRouting: "some" as "all" })).toThrow(/`eventRouting`/);
    expect(() => new AmqpEvents({ url, cancelRetentionMs: 10 })).toThrow(/`cancelRetentionMs`/);
    expect(() => new AmqpQueue({ url, names: { jobs: "" } })).toThrow(/`names.jobs`/);
    expect(() => new AmqpQueue({ url: [] })).toThrow(/`url` to be a URL or a list of 1 to 64 URLs, got a list of 0/);
    expect(() => new AmqpQueue({ url: [url, "http://node-2:5672"] })).toThrow(/`url\[1\]` to start with amqp:\/\//);
    expect(() => new AmqpConnection({ url: [url, 5672 as unknown as string] })).toThrow(/`url\[1\]` to be a non-empty string/);
    expect(() => new AmqpConnection({ url: ["amqp://u:secret@a", "http://u:secret@b"] })).toThrow(/got `http:\/\/u:…@b`/);
  });

  it("refuse connection options beside a shared connection", () => {
    const connection = new AmqpConnection({ url });
    expect(() => new AmqpQueue({ connection, url })).toThrow(/`url` to be absent when `connection` is given/);
    expect(() => new AmqpEvents({ connection, heartbeatSec: 5 })).toThrow(/`heartbeatSec` to be absent/);
    expect(() => new AmqpQueue({ connection: {} as AmqpConnection })).toThrow(/`connection` to be an AmqpConnection/);
    const queue = new AmqpQueue({ connection, queueName: "builds" });
    expect(queue.connection).toBe(connection);
    expect(connection.state).toBe("idle"); // constructors do no I/O
  });

  it("derive every name from the queue name unless overridden", () => {
    expect(resolveTopologyNames(undefined, undefined)).toEqual({
      jobs: "blacktree.jobs",
      deadLetters: "blacktree.jobs.dead",
      delayPrefix: "blacktree.jobs.delay",
      events: "blacktree.jobs.events",
      cancels: "blacktree.jobs.cancels",
      cancelLog: "blacktree.jobs.cancels.log",
      keysPrefix: "blacktree.jobs.keys",
      keyLog: "blacktree.jobs.keys.log",
      pool: "blacktree.jobs.pool",
    });
    expect(resolveTopologyNames("builds", { deadLetters: "builds-dlq" })).toMatchObject({ jobs: "builds", deadLetters: "builds-dlq", events: "builds.events" });
  });
});

describe("event routing keys", () => {
  it("use a safe job id as it is and hash one that topic matching would misread", () => {
    expect(jobKey("3f6c-uuid-like_id:1")).toBe("3f6c-uuid-like_id:1");
    expect(jobKey("build.api.1")).toBe("build.api.1");
    for (const id of ["a*b", "a#", "has space", "a..b", ".lead", "x".repeat(201), "é"]) {
      expect(jobKey(id)).toMatch(/^~[A-Za-z0-9_-]{32}$/);
      expect(jobKey(id)).toBe(jobKey(id));
    }
    expect(jobKey("a*b")).not.toBe(jobKey("a#"));
    expect(eventRoutingKey("result", "j1")).toBe("result.j1");
    expect(jobBindingKey("j1")).toBe("*.j1");
  });
});

describe("amqplib error translation", () => {
  it("maps reply codes, socket errors and the consumer_timeout close to OrchestratorError codes", () => {
    const withCode = (message: string, code: number | string) => Object.assign(new Error(message), { code });
    expect(fromAmqpError(withCode("PRECONDITION_FAILED - inequivalent arg", 406), "x")).toMatchObject({ code: "precondition_failed", retryable: false });
    expect(fromAmqpError(withCode("ACCESS_REFUSED", 403), "x").code).toBe("permission_denied");
    expect(fromAmqpError(withCode("NOT_FOUND - no queue", 404), "x").code).toBe("not_found");
    expect(fromAmqpError(withCode("connect ECONNREFUSED 127.0.0.1:5672", "ECONNREFUSED"), "x").code).toBe("unavailable");
    expect(fromAmqpError(new Error("Heartbeat timeout"), "x").code).toBe("unavailable");
    expect(fromAmqpError(new Error("Handshake terminated by server: 403 (ACCESS-REFUSED) with message ..."), "x").code).toBe("unauthenticated");
    const timeout = fromAmqpError(withCode("PRECONDITION_FAILED - delivery acknowledgement on channel 2 timed out. Timeout value used: 1800000 ms.", 406), "x");
    expect(timeout).toMatchObject({ code: "deadline_exceeded", details: { reason: "consumer_timeout" } });
    expect(timeout.message).toContain("docs/rabbitmq.md");
  });
});

describe("ConfirmPublisher", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const make = (bufferSize = 3, timeoutMs = 1000) => new ConfirmPublisher({ bufferSize, timeoutMs, outage: () => "connection lost" });

  it("holds publishes while there is no channel and writes them in order once attached", async () => {
    const publisher = make();
    const results = ["a", "b", "c"].map((body) => publisher.publish(request(body)));
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    expect(channel.published.map((p) => p.body)).toEqual(["a", "b", "c"]);
    for (const p of channel.published) p.confirm?.(null);
    await expect(Promise.all(results)).resolves.toEqual([undefined, undefined, undefined]);
    expect(publisher.pending).toBe(0);
  });

  it("rejects one publish too many with resource_exhausted and a buffered one past its timeout with unavailable, never writing it", async () => {
    const publisher = make(2, 1000);
    const first = publisher.publish(request("a"));
    const second = publisher.publish(request("b"));
    expect(await codeOf(() => publisher.publish(request("c")))).toBe("resource_exhausted");
    const firstCode = codeOf(() => first);
    const secondCode = codeOf(() => second);
    await vi.advanceTimersByTimeAsync(1500);
    expect(await firstCode).toBe("unavailable");
    expect(await secondCode).toBe("unavailable");
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    expect(channel.published).toEqual([]);
  });

  it("turns a channel closed before the confirm into unknown_outcome, a nack into unavailable, a return into not_found", async () => {
    const publisher = make();
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    const closed = codeOf(() => publisher.publish(request("a")));
    const nacked = codeOf(() => publisher.publish(request("b")));
    const returned = codeOf(() => publisher.publish(request("c")));
    const [a, b, c] = channel.published;
    a?.confirm?.(new Error("channel closed"));
    b?.confirm?.(new Error("message nacked"));
    channel.emit("return", { properties: { messageId: c?.messageId }, fields: { exchange: "", replyText: "NO_ROUTE" } });
    c?.confirm?.(null);
    expect([await closed, await nacked, await returned]).toEqual(["unknown_outcome", "unavailable", "not_found"]);
  });

  it("resolves a fire-and-forget publish once written, and reports a confirm that never comes as unknown_outcome", async () => {
    const publisher = make(3, 1000);
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    await expect(publisher.publish(request("progress", { confirm: false, mandatory: false }))).resolves.toBeUndefined();
    const silent = codeOf(() => publisher.publish(request("result")));
    await vi.advanceTimersByTimeAsync(2000);
    expect(await silent).toBe("unknown_outcome");
  });

  it("stops writing when the socket is full and keeps the order across the drain", async () => {
    const publisher = make(10);
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    channel.writable = false;
    void publisher.publish(request("1", { confirm: false, mandatory: false }));
    void publisher.publish(request("2", { confirm: false, mandatory: false }));
    void publisher.publish(request("3", { confirm: false, mandatory: false }));
    expect(channel.published.map((p) => p.body)).toEqual(["1"]);
    channel.writable = true;
    channel.emit("drain");
    expect(channel.published.map((p) => p.body)).toEqual(["1", "2", "3"]);
  });

  it("drops a buffered publish whose signal fires, rejecting with the signal's reason", async () => {
    const publisher = make();
    const controller = new AbortController();
    const aborted = codeOf(() => publisher.publish(request("a", { signal: controller.signal })));
    controller.abort(new OrchestratorError("canceled", "stop"));
    expect(await aborted).toBe("canceled");
    const channel = new FakeChannel();
    publisher.attach(channel.asChannel());
    expect(channel.published).toEqual([]);
  });
});
