import { afterEach, describe, expect, it } from "vitest";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { describeValue, invalidArgument, OrchestratorError } from "../../src/errors.ts";
import { JobClient } from "../../src/client/job-client.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { closestName } from "../../src/validate.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function client(queue = new MemoryQueue()): JobClient {
  const c = new JobClient({ queue, events: queue });
  cleanups.push(() => queue.close(), () => c.close());
  return c;
}

/** What a call gave: how it failed, and whether it threw before returning a promise. */
async function outcomeOf(call: () => Promise<unknown>): Promise<{ sync: boolean; error: unknown }> {
  let promise: Promise<unknown>;
  try {
    promise = call();
  } catch (error) {
    return { sync: true, error };
  }
  try {
    await promise;
    return { sync: false, error: undefined };
  } catch (error) {
    return { sync: false, error };
  }
}

describe("strict job spec", () => {
  it.each([
    ["maxAttempt", 3, "maxAttempts"],
    ["timeout", 1000, "timeoutMs"],
    ["startTimeout", 1000, "startTimeoutMs"],
    ["idempotency", "k", "idempotencyKey"],
    ["Labels", {}, "labels"],
  ])("refuses the unknown field %s, suggesting %s", async (field, value, meant) => {
    const c = client();
    const error = await c.submit({ type: "t", payload: null, [field]: value } as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field, suggestion: meant } });
    expect((error as Error).message).toContain(`Unknown field \`${field}\``);
    expect((error as Error).message).toContain(`did you mean \`${meant}\`?`);
    expect(c.pending).toBe(0);
  });

  it("refuses an unknown field with no near name, listing the known ones", async () => {
    const error = await client().submit({ type: "t", payload: null, colour: "red" } as never).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field: "colour" } });
    expect((error as OrchestratorError).details.suggestion).toBeUndefined();
    expect((error as Error).message).toMatch(/known fields: .*maxAttempts.*timeoutMs/);
  });

  it("refuses an unknown field even when its value is undefined", async () => {
    await expect(client().submit({ type: "t", payload: null, maxAttempt: undefined } as never)).rejects.toMatchObject({
      code: "invalid_argument",
      details: { field: "maxAttempt" },
    });
  });

  it("suggests the field with its unit for a name without one", () => {
    expect(closestName("delay", ["delayMs", "timeoutMs", "labels"])).toBe("delayMs");
    expect(closestName("timeout", ["startTimeoutMs", "timeoutMs"])).toBe("timeoutMs");
    expect(closestName("maxAttempt", ["maxAttempts", "metadata"])).toBe("maxAttempts");
    expect(closestName("prority", ["priority", "payload"])).toBe("priority");
    expect(closestName("zzz", ["priority", "payload"])).toBeUndefined();
    expect(closestName("id", ["idempotencyKey", "type"])).toBeUndefined();
  });

  it("names payload, not envelope, when the job is over the queue's size limit", async () => {
    const queue = new MemoryQueue({ maxEnvelopeBytes: 1024 });
    const error = await client(queue).submit({ type: "t", payload: "x".repeat(2000) }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field: "payload", maxBytes: 1024 } });
    expect((error as Error).message).toContain("`payload`");
    expect((error as Error).message).not.toMatch(/envelope of/i);
  });

  it("turns a payload getter that throws into invalid_argument naming the path, keeping the cause", async () => {
    const boom = new Error("boom");
    const payload = { a: { get b(): never { throw boom; } } };
    const error = await client().submit({ type: "t", payload }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument", details: { field: "payload.a.b" }, cause: boom });
    expect((error as Error).message).toContain("boom");
  });

  it("turns a spec whose own getter or proxy throws into invalid_argument", async () => {
    const spec = { type: "t", get payload(): never { throw new TypeError("nope"); } };
    await expect(client().submit(spec as never)).rejects.toMatchObject({ code: "invalid_argument" });
    const proxy = new Proxy({}, { ownKeys: () => { throw new Error("trap"); } });
    const error = await client().submit({ type: "t", payload: proxy }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OrchestratorError);
    expect(error).toMatchObject({ code: "invalid_argument" });
  });
});

describe("validation errors reach the caller the way the method returns", () => {
  it("rejects, never throws, from result(), cancel(), get(), counts() and submit() on bad input", async () => {
    const c = client();
    const handle = await c.submit({ type: "t", payload: null });
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["result timeoutMs -5", () => handle.result({ timeoutMs: -5 })],
      ["result timeout", () => handle.result({ timeout: 5 } as never)],
      ["result null", () => handle.result(null as never)],
      ["result signal", () => handle.result({ signal: "x" } as never)],
      ["cancel null", () => handle.cancel("requested", null as never)],
      ["cancel reason", () => handle.cancel("bogus" as never)],
      ["cancel unknown option", () => handle.cancel("requested", { mesage: "x" } as never)],
      ["submit null", () => c.submit(null as never)],
      ["get bad id", () => c.get("")],
      ["list without store", () => c.list()],
    ];
    for (const [name, call] of calls) {
      const { sync, error } = await outcomeOf(call);
      expect({ name, sync }).toEqual({ name, sync: false });
      expect({ name, error: error instanceof OrchestratorError }).toEqual({ name, error: true });
    }
  });
});

describe("value formatting in messages", () => {
  it.each([
    [Number.NaN, "`NaN` (number)"],
    [Number.POSITIVE_INFINITY, "`Infinity` (number)"],
    [Number.NEGATIVE_INFINITY, "`-Infinity` (number)"],
    [-0, "`-0` (number)"],
    [undefined, "`undefined` (undefined)"],
    [10n, "`10n` (bigint)"],
    [Symbol("s"), "`Symbol(s)` (symbol)"],
    [null, "`null` (null)"],
    ["x", '`"x"` (string)'],
    [{ a: Number.NaN, b: [1n] }, '`{"a":NaN,"b":[1n]}` (object)'],
    [new Map(), "`Map {}` (object)"],
  ])("shows %s as itself", (value, text) => {
    expect(describeValue(value)).toBe(text);
  });

  it("shows NaN in an option error as NaN, not null", () => {
    expect(invalidArgument("timeoutMs", "an integer", Number.NaN).message).toContain("got `NaN` (number)");
    expect(() => new JobClient({ queue: new MemoryQueue(), events: new MemoryQueue(), defaults: { timeoutMs: Number.NaN } })).toThrow(/got `NaN`/);
  });
});

describe("unknown options of the public classes", () => {
  it("refuses unknown JobClient, Dispatcher and WorkerPool options with a suggestion", () => {
    const queue = new MemoryQueue();
    cleanups.push(() => queue.close());
    const pool = new WorkerPool();
    cleanups.push(() => pool.close());
    const cases: Array<[() => unknown, string, string]> = [
      [() => new JobClient({ queue, events: queue, storePollInterval: 5 } as never), "storePollInterval", "storePollIntervalMs"],
      [() => new JobClient({ queue, events: queue, defaults: { maxAttempt: 2 } } as never), "defaults.maxAttempt", "defaults.maxAttempts"],
      [() => new Dispatcher({ queue, events: queue, pool, closeTimeout: 5 } as never), "closeTimeout", "closeTimeoutMs"],
      [() => new Dispatcher({ queue, events: queue, pool, retry: { baseDelay: 5 } } as never), "retry.baseDelay", "retry.baseDelayMs"],
      [() => new WorkerPool({ loger: console } as never), "loger", "logger"],
      [() => pool.add({ id: "w", transport: new InProcessTransport({ handlers: {} }), slot: 2 } as never), "slot", "slots"],
    ];
    for (const [make, field, suggestion] of cases) {
      let error: unknown;
      try {
        make();
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ code: "invalid_argument", details: { field, suggestion } });
    }
  });
});
