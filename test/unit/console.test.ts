import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createConsole, type ConsoleHandler } from "../../src/console/console.ts";
import { BULK_SCAN_LIMIT } from "../../src/console/routes-actions.ts";
import { MemoryPoolBus } from "../../src/console/pool-bus.ts";
import { PoolReporter } from "../../src/console/pool-reporter.ts";
import { Dispatcher } from "../../src/dispatcher/dispatcher.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { WorkerPool } from "../../src/worker-pool/worker-pool.ts";
import { readSse } from "../helpers/sse.ts";

/** What Express does for `app.use("/admin", handler)`: strips the prefix from `req.url`, sets `baseUrl` and `originalUrl`. */
function expressMount(prefix: string, handler: ConsoleHandler) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "/";
    const path = url.split("?")[0] as string;
    if (path !== prefix && !path.startsWith(`${prefix}/`)) {
      res.statusCode = 404;
      res.end("app 404");
      return;
    }
    Object.assign(req, { originalUrl: url, baseUrl: prefix, url: url.slice(prefix.length) === "" || url.slice(prefix.length).startsWith("?") ? `/${url.slice(prefix.length)}` : url.slice(prefix.length) });
    handler(req, res, () => {
      res.statusCode = 404;
      res.end("app 404");
    });
  };
}

describe("createConsole in one process (memory queue, store and pool bus)", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function setup(store = new MemoryJobStore()) {
    const queue = new MemoryQueue();
    const pool = new WorkerPool();
    pool.add({ id: "w1", transport: new InProcessTransport({ handlers: { echo: async (p: unknown) => p }, slots: 2 }), slots: 2, admission: "trust" });
    const dispatcher = new Dispatcher({ queue, events: queue, pool, store, dispatcherId: "d1", noWorkerDelayMs: 20 });
    await dispatcher.start();
    const bus = new MemoryPoolBus();
    const reporter = new PoolReporter({ pool, bus, orchestratorId: "o1", intervalMs: 100 });
    await reporter.start();
    const uiDir = await mkdtemp(join(tmpdir(), "test-console-api-unit-"));
    for (const [file, text] of [["index.html", "<!doctype html><title>c</title>"], ["console.js", ""], ["console.css", ""]]) await writeFile(join(uiDir, file as string), text as string);
    const console = createConsole({ queue, events: queue, store, poolBus: bus, uiDir, authorize: () => true, identify: () => "tester", overviewIntervalMs: 100 });
    const server: Server = createServer(expressMount("/admin", console));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin`;
    cleanups.push(async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await console.close();
      await reporter.close();
      await dispatcher.close();
      await pool.close();
      await queue.close();
      await rm(uiDir, { recursive: true, force: true });
    });
    return { base, store, pool, queue };
  }

  it("works mounted as Express mounts it (req.baseUrl), redirecting the bare prefix", async () => {
    const { base } = await setup();
    const bare = await fetch(base, { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("/admin/");
    expect((await fetch(`${base}/`)).headers.get("content-type")).toMatch(/^text\/html/);
    const session = await fetch(`${base}/api/session`);
    expect(await session.json()).toMatchObject({ readOnly: false, user: "tester", actions: { drain: true } });
    expect(session.headers.get("set-cookie")).toMatch(/^blacktree_console_csrf=[^;]+; Path=\/; HttpOnly; SameSite=Strict$/);
  });

  it("answers a bulk retry preview too_many when the records it would leave out pass the scan limit", async () => {
    // Cancelled jobs whose records hold a redacted payload cannot be retried: each is read and left out.
    const store = new MemoryJobStore({ maxRecords: 2 * BULK_SCAN_LIMIT, redactPayload: (payload) => ({ ...(payload as object), token: "***" }) });
    const { base } = await setup(store);
    const session = await fetch(`${base}/api/session`);
    const cookie = (session.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const { csrfToken } = (await session.json()) as { csrfToken: string };
    const preview = async () => {
      const response = await fetch(`${base}/api/bulk/preview`, {
        method: "POST",
        headers: { cookie, "x-csrf-token": csrfToken, "content-type": "application/json", origin: new URL(base).origin },
        body: JSON.stringify({ action: "retry", filter: { type: "redacted" } }),
      });
      return { status: response.status, body: (await response.json()) as { excluded?: number; count?: number; error?: { code: string } } };
    };
    const add = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const { record } = await store.create({ id: randomUUID(), type: "redacted", payload: { token: "secret" }, maxAttempts: 1, timeoutMs: 60_000, startTimeoutMs: 60_000 });
        await store.record({ kind: "finished", jobId: record.id, attempt: 1, fencingToken: 0, started: false, at: Date.now(), outcome: { status: "cancelled", reason: "requested" } });
      }
    };
    await add(BULK_SCAN_LIMIT);
    expect(await preview()).toEqual({ status: 200, body: expect.objectContaining({ count: 0, excluded: BULK_SCAN_LIMIT }) });
    await add(1);
    expect(await preview()).toEqual({ status: 400, body: { error: expect.objectContaining({ code: "too_many" }) } });
  }, 120_000);

  it("refuses a mutating request from another origin even with the session's token", async () => {
    const { base } = await setup();
    const session = await fetch(`${base}/api/session`);
    const cookie = (session.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const { csrfToken } = (await session.json()) as { csrfToken: string };
    const post = (origin: string | undefined) =>
      fetch(`${base}/api/jobs`, {
        method: "POST",
        headers: { cookie, "x-csrf-token": csrfToken, "content-type": "application/json", ...(origin === undefined ? {} : { origin }) },
        body: JSON.stringify({ type: "echo", payload: 1 }),
      });
    expect((await post("https://evil.example")).status).toBe(403);
    expect((await post("null")).status).toBe(403);
    expect((await post(new URL(base).origin)).status).toBe(201);
  });

  it("shows the pool's worker from the reporter, streams its drain as a worker event, and undrains it", async () => {
    const { base, pool } = await setup();
    const session = await fetch(`${base}/api/session`);
    const cookie = (session.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const { csrfToken } = (await session.json()) as { csrfToken: string };
    await waitFor(async () => ((await (await fetch(`${base}/api/workers`)).json()) as { workers: unknown[] }).workers.length === 1, { timeoutMs: 5000, what: "the worker listed" });
    const live = readSse(`${base}/api/events`);
    cleanups.push(() => live.close());
    const frames = live.frames;
    await waitFor(() => frames.some((f) => f.event === "overview"), { timeoutMs: 5000, what: "the first overview" });
    const post = (path: string) => fetch(`${base}${path}`, { method: "POST", headers: { cookie, "x-csrf-token": csrfToken } });
    const drained = await post("/api/workers/w1/drain");
    expect(await drained.json()).toEqual({ worker: "w1", applied: ["o1"], errors: [] });
    expect(pool.get("w1")?.state).toBe("draining");
    await waitFor(() => frames.some((f) => f.event === "worker" && f.data.id === "w1" && f.data.state === "draining"), { timeoutMs: 5000, what: "the worker event" });
    expect(frames.some((f) => f.event === "audit")).toBe(true);
    expect((await post("/api/workers/w1/undrain")).status).toBe(200);
    expect(pool.get("w1")?.state).toBe("idle");
    await waitFor(() => frames.some((f) => f.event === "worker" && f.data.id === "w1" && f.data.state === "idle"), { timeoutMs: 5000, what: "the worker idle again" });
  });
});
