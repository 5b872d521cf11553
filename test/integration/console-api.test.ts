import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createConsole, type ConsoleHandler } from "../../src/console/console.ts";
import { CONTENT_SECURITY_POLICY } from "../../src/console/http.ts";
import { AmqpPoolBus } from "../../src/console/pool-bus.ts";
import { AmqpConnection } from "../../src/queue/amqp/amqp-connection.ts";
import { AmqpEvents } from "../../src/queue/amqp/amqp-events.ts";
import { AmqpQueue } from "../../src/queue/amqp/amqp-queue.ts";
import { PostgresJobStore } from "../../src/store/postgres/postgres-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { usePostgres } from "../helpers/postgres.ts";
import { useRabbitMq } from "../helpers/rabbitmq.ts";
import { readSse } from "../helpers/sse.ts";
import { startWorkerProcess, type WorkerProcess } from "../helpers/worker-process.ts";

const rabbit = await useRabbitMq();
const postgres = await usePostgres();
const SCHEMA = "t_console_api";
const orchestratorEntry = fileURLToPath(new URL("../helpers/console-orchestrator-entry.ts", import.meta.url));

/** A browser-like client of one console: keeps the session cookie and the CSRF token. */
class Session {
  readonly base: string;
  readonly user: string | undefined;
  cookie = "";
  token = "";

  constructor(base: string, user?: string) {
    this.base = base;
    this.user = user;
  }

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.cookie === "" ? {} : { cookie: this.cookie }), ...(this.user === undefined ? {} : { "x-user": this.user }), ...extra };
  }

  async open(): Promise<Record<string, unknown>> {
    const response = await fetch(`${this.base}/api/session`, { headers: this.#headers() });
    const cookie = response.headers.getSetCookie()[0];
    if (cookie !== undefined) this.cookie = cookie.split(";")[0] as string;
    const session = (await response.json()) as Record<string, unknown>;
    this.token = String(session.csrfToken);
    return session;
  }

  async get(path: string): Promise<{ status: number; body: any; headers: Headers }> {
    const response = await fetch(`${this.base}${path}`, { headers: this.#headers() });
    return { status: response.status, body: await response.json(), headers: response.headers };
  }

  async send(method: string, path: string, body?: unknown, options: { csrf?: string | null; raw?: string } = {}): Promise<{ status: number; body: any }> {
    const token = options.csrf === undefined ? this.token : options.csrf;
    const response = await fetch(`${this.base}${path}`, {
      method,
      headers: this.#headers({ "content-type": "application/json", ...(token === null ? {} : { "x-csrf-token": token }) }),
      ...(options.raw !== undefined ? { body: options.raw } : body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: await response.json() };
  }

  post(path: string, body?: unknown, options?: { csrf?: string | null; raw?: string }) {
    return this.send("POST", path, body ?? {}, options);
  }
}

describe.skipIf(!rabbit.available || !postgres.available)("the console's API on RabbitMQ, PostgreSQL and worker processes", () => {
  const queueName = rabbit.queueName("console-api");
  const orchestratorId = `test-console-api-orchestrator-${randomUUID().slice(0, 8)}`;
  let worker: WorkerProcess;
  let orchestrator: ChildProcess;
  let orchestratorOutput = "";
  let connection: AmqpConnection;
  let queue: AmqpQueue;
  let events: AmqpEvents;
  let store: PostgresJobStore;
  let bus: AmqpPoolBus;
  let uiDir: string;
  let ops: ConsoleHandler;
  let readOnly: ConsoleHandler;
  /** A console over a store whose `redactPayload` hook hides `token` fields in the records. */
  let redacting: ConsoleHandler;
  let redactingStore: PostgresJobStore;
  let redactingBase = "";
  const servers: Server[] = [];
  let opsBase = "";
  let readOnlyBase = "";

  async function listen(handler: (req: IncomingMessage, res: import("node:http").ServerResponse) => void): Promise<string> {
    const server = createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  beforeAll(async () => {
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    store = new PostgresJobStore({ connectionString: postgres.url, schema: SCHEMA });
    await store.migrate();
    worker = await startWorkerProcess({ slots: 4 });
    orchestrator = spawn(process.execPath, ["--no-warnings", orchestratorEntry, JSON.stringify({
      amqpUrl: rabbit.url, queueName, postgresUrl: postgres.url, schema: SCHEMA, orchestratorId, workers: [{ id: "worker-a", address: worker.address }],
    })], { stdio: ["ignore", "pipe", "pipe"] });
    orchestrator.stdout?.on("data", (chunk: Buffer) => (orchestratorOutput += chunk.toString()));
    orchestrator.stderr?.on("data", (chunk: Buffer) => (orchestratorOutput += chunk.toString()));
    await waitFor(() => orchestratorOutput.includes("ready"), { timeoutMs: 30_000, what: `the orchestrator process ready:\n${orchestratorOutput}` });

    connection = new AmqpConnection({ url: rabbit.url, connectionName: "test-console-api-console" });
    queue = new AmqpQueue({ connection, queueName });
    events = new AmqpEvents({ connection, queueName, subscriberExpiresMs: 10_000 });
    bus = new AmqpPoolBus({ connection, queueName });
    uiDir = await mkdtemp(join(tmpdir(), "test-console-api-ui-"));
    await writeFile(join(uiDir, "index.html"), '<!doctype html><title>console</title><script type="module" src="assets/console.js"></script>');
    await writeFile(join(uiDir, "console.js"), "export {};");
    await writeFile(join(uiDir, "console.css"), "body{}");
    const userOf = (req: IncomingMessage) => (typeof req.headers["x-user"] === "string" ? req.headers["x-user"] : undefined);
    ops = createConsole({
      queue, events, store, poolBus: bus, uiDir, basePath: "/ops/console", overviewIntervalMs: 500,
      identify: userOf,
      authorize: (req) => userOf(req) === "ops",
      redact: (payload) => (typeof payload === "object" && payload !== null && "secret" in payload ? { ...payload, secret: "[redacted]" } : payload),
    });
    readOnly = createConsole({ queue, events, store, uiDir });
    redactingStore = new PostgresJobStore({
      connectionString: postgres.url, schema: SCHEMA,
      redactPayload: (payload) => (typeof payload === "object" && payload !== null && "token" in payload ? { ...payload, token: "***" } : payload),
    });
    redacting = createConsole({ queue, events, store: redactingStore, uiDir, identify: userOf, authorize: (req) => userOf(req) === "ops" });
    opsBase = await listen((req, res) => ops(req, res, () => {
      res.statusCode = 418;
      res.end("the app");
    }));
    opsBase += "/ops/console";
    readOnlyBase = await listen((req, res) => readOnly(req, res));
    redactingBase = await listen((req, res) => redacting(req, res));
    await ops.ready();
  }, 60_000);

  afterAll(async () => {
    for (const server of servers) server.closeAllConnections();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    await ops?.close();
    await readOnly?.close();
    await redacting?.close();
    await redactingStore?.close();
    orchestrator?.kill("SIGTERM");
    if (orchestrator !== undefined && orchestrator.exitCode === null) await new Promise((resolve) => orchestrator.once("exit", resolve));
    await worker?.stop();
    await bus?.close();
    await Promise.allSettled([queue?.close(), events?.close()]);
    await connection?.close();
    await store?.close();
    await postgres.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await rabbit.cleanup();
    if (uiDir !== undefined) await rm(uiDir, { recursive: true, force: true });
  }, 60_000);

  it("serves the page under its prefix with strict security headers, redirects the bare prefix, and passes other paths on", async () => {
    const page = await fetch(`${opsBase}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'");
    expect(CONTENT_SECURITY_POLICY).not.toContain("unsafe-inline");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    expect(await page.text()).toContain("assets/console.js");
    const script = await fetch(`${opsBase}/assets/console.js`);
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    const bare = await fetch(opsBase, { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("/ops/console/");
    const outside = await fetch(opsBase.replace("/ops/console", "/elsewhere"));
    expect(outside.status).toBe(418);
    const missing = await fetch(`${opsBase}/api/nothing`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
    expect(missing.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
  });

  it("is read-only without an authorize hook: a mutating request is refused 403 and audited", async () => {
    const session = new Session(readOnlyBase);
    const info = await session.open();
    expect(info).toMatchObject({ readOnly: true, user: "anonymous", actions: { cancel: false, submit: false, drain: false, bulk: false } });
    const refused = await session.post("/api/jobs", { type: "echo", payload: {} });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe("forbidden");
    const audit = await session.get("/api/audit");
    expect(audit.body.entries[0]).toMatchObject({ who: "anonymous", action: "submit", target: "echo", outcome: "denied" });
  });

  it("refuses 403 a mutating request without the CSRF token, with another session's, or unauthorized", async () => {
    const session = new Session(opsBase, "ops");
    expect(await session.open()).toMatchObject({ readOnly: false, user: "ops", actions: { cancel: true, submit: true } });
    const noToken = await session.post("/api/jobs", { type: "echo", payload: {} }, { csrf: null });
    expect(noToken).toMatchObject({ status: 403, body: { error: { code: "csrf" } } });
    const other = new Session(opsBase, "ops");
    await other.open();
    expect((await session.post("/api/jobs", { type: "echo", payload: {} }, { csrf: other.token })).status).toBe(403);
    const noCookie = new Session(opsBase, "ops");
    noCookie.token = session.token;
    expect((await noCookie.post("/api/jobs", { type: "echo", payload: {} })).status).toBe(403);
    const intruder = new Session(opsBase, "intruder");
    await intruder.open();
    const denied = await intruder.post("/api/jobs", { type: "echo", payload: {} });
    expect(denied).toMatchObject({ status: 403, body: { error: { code: "forbidden" } } });
    const { body } = await session.get("/api/audit?limit=5");
    expect(body.entries[0]).toMatchObject({ who: "intruder", action: "submit", outcome: "denied" });
    // Nothing was submitted by any of them.
    expect((await store.list({ type: "echo" })).records).toEqual([]);
  });

  it("submits a job from the API, streams its progress and log over SSE, and shows it with every attempt", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const id = `console-progress-${randomUUID()}`;
    const live = readSse(`${opsBase}/api/events?job=${encodeURIComponent(id)}`);
    const headers = await live.headers;
    expect(headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    const submitted = await session.post("/api/jobs", { type: "progress", id, payload: { steps: 3, secret: "hunter2" }, metadata: { suite: "console-api" } });
    expect(submitted).toEqual({ status: 201, body: { id } });
    await waitFor(() => live.frames.some((f) => f.event === "job" && f.data.kind === "result"), { timeoutMs: 20_000, what: "the job's result on the stream" });
    await live.close();
    const jobEvents = live.frames.filter((f) => f.event === "job").map((f) => f.data);
    expect(jobEvents.every((e) => e.jobId === id)).toBe(true);
    const progress = jobEvents.filter((e) => e.kind === "progress").map((e) => e.progress);
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress).toEqual([...progress].sort((a, b) => a - b)); // it moves forward
    expect(jobEvents.filter((e) => e.kind === "log").map((e) => e.line)).toEqual(["step 1", "step 2", "step 3"]);
    expect(jobEvents.findIndex((e) => e.kind === "state" && e.state === "running")).toBeLessThan(jobEvents.findIndex((e) => e.kind === "progress"));
    await waitFor(async () => (await store.get(id))?.state === "completed", { timeoutMs: 10_000, what: "the record completed" });
    const { status, body } = await session.get(`/api/jobs/${encodeURIComponent(id)}`);
    expect(status).toBe(200);
    expect(body.job).toMatchObject({ id, type: "progress", state: "completed", payload: { steps: 3, secret: "[redacted]" }, metadata: { suite: "console-api" } });
    expect(body.attempts).toEqual([expect.objectContaining({ number: 1, workerId: "worker-a", dispatcherId: orchestratorId, outcome: "completed" })]);
    expect(body.logs.map((l: { line: string }) => l.line)).toEqual(["step 1", "step 2", "step 3"]);
    // The dispatcher kept them in the job store: a console that saw none of it live shows them too.
    await waitFor(async () => (await store.logs(id)).length === 3, { timeoutMs: 10_000, what: "the log lines kept in the store" });
    expect(await store.logs(id)).toEqual(["step 1", "step 2", "step 3"].map((line, seq) => expect.objectContaining({ line, seq, attempt: 1 })));
    const late = createConsole({ queue, events, store, uiDir });
    try {
      const lateBase = await listen((req, res) => late(req, res));
      const shown = await new Session(lateBase).get(`/api/jobs/${encodeURIComponent(id)}`);
      expect(shown.body.logs).toEqual(["step 1", "step 2", "step 3"].map((line) => expect.objectContaining({ line, attempt: 1 })));
    } finally {
      await late.close();
    }
    const listed = await session.get(`/api/jobs?state=completed&type=progress&q=console-progress&meta.suite=console-api&idPrefix=${encodeURIComponent(id.slice(0, 20))}`);
    expect(listed.body.jobs.map((j: { id: string }) => j.id)).toContain(id);
    expect((await session.get(`/api/jobs?state=failed&idPrefix=${encodeURIComponent(id)}`)).body.jobs).toEqual([]);
    const audit = await session.get("/api/audit?limit=10");
    expect(audit.body.entries).toContainEqual(expect.objectContaining({ who: "ops", action: "submit", target: "progress", outcome: "ok", detail: `submitted ${id}` }));
  });

  it("cancels a running job with a reason: the handler stops on its worker, and the action is audited", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const marker = join(uiDir, `abort-${randomUUID()}.json`);
    const { body } = await session.post("/api/jobs", { type: "waitForAbort", payload: { marker } });
    const id = body.id as string;
    await waitFor(async () => (await store.get(id))?.state === "running", { timeoutMs: 20_000, what: "the job running" });
    const cancelled = await session.post(`/api/jobs/${id}/cancel`, { reason: "stuck on a lock" });
    expect(cancelled).toEqual({ status: 200, body: { id, sent: true } });
    await waitFor(async () => (await store.get(id))?.state === "cancelled", { timeoutMs: 20_000, what: "the job cancelled" });
    const job = await session.get(`/api/jobs/${id}`);
    expect(job.body.job.cancel).toMatchObject({ reason: "requested", message: "stuck on a lock" });
    expect(job.body.attempts[0]).toMatchObject({ workerId: "worker-a", outcome: "cancelled" });
    // The handler itself saw its signal fire, with the reason `requested`, on the worker process.
    // (The record may say cancelled before the handler's write of its marker ends: read until it parses.)
    const seen = await waitFor(async () => JSON.parse(await readFile(marker, "utf8")) as unknown, { timeoutMs: 10_000, what: "the handler's abort marker" });
    expect(seen).toMatchObject({ jobId: id, code: "canceled", reason: "requested" });
    expect((await session.post(`/api/jobs/${id}/cancel`, {})).status).toBe(409);
    const audit = await session.get("/api/audit?limit=10");
    expect(audit.body.entries).toContainEqual(expect.objectContaining({ action: "cancel", target: id, outcome: "ok", detail: "stuck on a lock" }));
  });

  it("lists a dead letter with its reason and history, and retry redrives it to run again", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const { body } = await session.post("/api/jobs", { type: "failNonRetryable", payload: { message: "bad input" }, maxAttempts: 1 });
    const id = body.id as string;
    await waitFor(async () => (await store.get(id))?.deadLetter !== undefined, { timeoutMs: 20_000, what: "the job dead-lettered" });
    // The record says so just before the delivery is moved (settle order): wait for the broker's dead-letter queue too.
    await waitFor(async () => (await rabbit.messageCount(`${queueName}.dead`)) === 1, { timeoutMs: 20_000, what: "the dead letter in its queue" });
    const dead = await session.get(`/api/dead-letters?idPrefix=${id}`);
    expect(dead.body.deadLetters).toEqual([expect.objectContaining({ jobId: id, type: "failNonRetryable", redrives: 0, attempts: [expect.objectContaining({ workerId: "worker-a", outcome: "failed" })] })]);
    expect(dead.body.deadLetters[0].reason).toContain("bad input");
    const retried = await session.post(`/api/jobs/${id}/retry`);
    expect(retried).toEqual({ status: 200, body: { id, redriven: true } });
    await waitFor(async () => {
      const record = await store.get(id);
      return record?.redrives === 1 && record.attempts.length === 2 && record.deadLetter !== undefined;
    }, { timeoutMs: 20_000, what: "the redriven job ran again (and failed again)" });
  });

  it("retries a cancelled job with its own payload, and refuses (409 payload_redacted) one whose record holds a redacted copy", async () => {
    const session = new Session(redactingBase, "ops");
    await session.open();
    // Due in ten minutes, so each waits `scheduled` until cancelled; the hook changes only the first.
    const secret = await session.post("/api/jobs", { type: "echo", payload: { token: "hunter2", n: 1 }, delayMs: 600_000 });
    const plain = await session.post("/api/jobs", { type: "echo", payload: { n: 2 }, delayMs: 600_000, priority: 2 });
    expect([secret.status, plain.status]).toEqual([201, 201]);
    for (const id of [secret.body.id, plain.body.id]) {
      expect((await session.post(`/api/jobs/${id}/cancel`, { reason: "to retry" })).status).toBe(200);
      await waitFor(async () => (await store.get(id))?.state === "cancelled", { timeoutMs: 20_000, what: `job ${id} cancelled` });
    }
    const page = await session.get(`/api/jobs/${secret.body.id}`);
    expect(page.body.job).toMatchObject({ payload: { token: "***", n: 1 }, payloadRedacted: true });
    expect((await session.get(`/api/jobs/${plain.body.id}`)).body.job.payloadRedacted).toBeUndefined();

    // A bulk retry leaves it out, and says so before anything runs.
    const preview = await session.post("/api/bulk/preview", { action: "retry", filter: { idPrefix: secret.body.id } });
    expect(preview.body).toMatchObject({ count: 0, excluded: 1 });
    expect((await session.post("/api/bulk/preview", { action: "retry", filter: { idPrefix: plain.body.id } })).body).toMatchObject({ count: 1, excluded: 0 });
    const refused = await session.post(`/api/jobs/${secret.body.id}/retry`);
    expect(refused).toMatchObject({ status: 409, body: { error: { code: "payload_redacted" } } });
    // Nothing was submitted in its place.
    expect((await store.list({ metadata: { retryOf: secret.body.id } })).records).toEqual([]);

    const retried = await session.post(`/api/jobs/${plain.body.id}/retry`);
    expect(retried.status).toBe(200);
    const again = await waitFor(async () => {
      const record = await store.get(retried.body.newId);
      return record?.state === "completed" && record;
    }, { timeoutMs: 20_000, what: "the retried job completed" });
    // It ran on the job's own payload (echo answers it), at its priority, now rather than in ten minutes.
    expect(again).toMatchObject({ result: { n: 2 }, priority: 2, metadata: { retryOf: plain.body.id } });
    const audit = (await session.get("/api/audit?limit=20")).body.entries;
    expect(audit).toContainEqual(expect.objectContaining({ action: "retry", target: secret.body.id, outcome: "failed", detail: expect.stringContaining("redactPayload") }));
    expect(audit).toContainEqual(expect.objectContaining({ action: "retry", target: plain.body.id, outcome: "ok", detail: `resubmitted as ${retried.body.newId}` }));
  });

  it("shows the orchestrator's workers, drains one so it takes no job, and undrains it", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    await waitFor(async () => (await session.get("/api/workers")).body.workers.length === 1, { timeoutMs: 10_000, what: "the worker listed" });
    const { body } = await session.get("/api/workers/worker-a");
    expect(body.worker).toMatchObject({ id: "worker-a", slots: { total: 4 }, orchestrators: [expect.objectContaining({ id: orchestratorId })] });
    expect(["idle", "busy"]).toContain(body.worker.state);
    expect(body.worker.history.map((h: { to: string }) => h.to)).toContain("idle");
    const drained = await session.post("/api/workers/worker-a/drain");
    expect(drained).toEqual({ status: 200, body: { worker: "worker-a", applied: [orchestratorId], errors: [] } });
    await waitFor(async () => (await session.get("/api/workers/worker-a")).body.worker.state === "draining", { timeoutMs: 10_000, what: "the worker draining" });
    const { body: job } = await session.post("/api/jobs", { type: "echo", payload: { n: 1 } });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(["queued", "unschedulable"]).toContain((await store.get(job.id))?.state); // no worker takes it
    expect((await session.post("/api/workers/worker-a/undrain")).status).toBe(200);
    await waitFor(async () => (await store.get(job.id))?.state === "completed", { timeoutMs: 20_000, what: "the job ran after the undrain" });
    const history = (await session.get("/api/workers/worker-a")).body.worker.history.map((h: { to: string }) => h.to);
    expect(history).toContain("draining");
    expect(orchestratorOutput).toMatch(/drain worker-a[\s\S]*undrain worker-a/);
    expect((await session.post("/api/workers/nobody/drain")).status).toBe(404);
    const audit = (await session.get("/api/audit?limit=20")).body.entries;
    expect(audit).toContainEqual(expect.objectContaining({ action: "drain", target: "worker-a", outcome: "ok" }));
    expect(audit).toContainEqual(expect.objectContaining({ action: "drain", target: "nobody", outcome: "failed" }));
  });

  it("previews a bulk cancel by filter, refuses it when the count changed, and cancels exactly the previewed jobs", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const batch = randomUUID();
    for (let i = 0; i < 3; i++) await session.post("/api/jobs", { type: "sleep", payload: { ms: 60_000 }, metadata: { batch } });
    const filter = { metadata: { batch } };
    const preview = await session.post("/api/bulk/preview", { action: "cancel", filter });
    expect(preview.status).toBe(200);
    expect(preview.body.count).toBe(3);
    expect(preview.body.sample).toHaveLength(3);
    expect((await session.post("/api/bulk", { action: "cancel", filter, expectedCount: 2 })).body.error.code).toBe("count_changed");
    const run = await session.post("/api/bulk", { action: "cancel", filter, expectedCount: preview.body.count, reason: "bulk test" });
    expect(run.status).toBe(200);
    expect(run.body.done.sort()).toEqual([...preview.body.sample].sort());
    expect(run.body.failed).toEqual([]);
    await waitFor(async () => (await store.list({ metadata: { batch }, state: "cancelled" })).records.length === 3, { timeoutMs: 20_000, what: "the three jobs cancelled" });
    const audit = (await session.get("/api/audit?limit=20")).body.entries;
    expect(audit).toContainEqual(expect.objectContaining({ action: "bulk", count: 3, filter: { metadata: { batch } }, outcome: "ok" }));
    expect(audit).toContainEqual(expect.objectContaining({ action: "bulk", count: 2, filter: { metadata: { batch } }, outcome: "failed" }));
    expect((await session.post("/api/bulk/preview", { action: "cancel", filter })).body.count).toBe(0);
  });

  it("shows the overview: queue depth from the broker, jobs by state, throughput, workers and slots", async () => {
    const session = new Session(opsBase, "ops");
    const { body } = await session.get("/api/overview");
    // The orchestrator consumes every priority lane (the job queue is level 3; an idle lane keeps
    // one consumer, a busy one up to the pool's slots), and its depth lists them as `other`.
    expect(body.queues).toContainEqual({ name: queueName, role: "jobs", ready: expect.any(Number), consumers: expect.any(Number) });
    for (const lane of [queueName, `${queueName}.p1`, `${queueName}.p5`]) {
      const consumers = (body.queues as Array<{ name: string; consumers: number }>).find((q) => q.name === lane)?.consumers ?? 0;
      expect(consumers).toBeGreaterThanOrEqual(1);
      expect(consumers).toBeLessThanOrEqual(4 + 2);
    }
    expect(body.queues).toContainEqual(expect.objectContaining({ name: `${queueName}.dead`, role: "dead" }));
    expect(body.jobs.byState.completed).toBeGreaterThanOrEqual(2);
    expect(body.jobs.byState.cancelled).toBeGreaterThanOrEqual(4);
    expect(body.throughput.buckets.reduce((n: number, b: { completed: number }) => n + b.completed, 0)).toBeGreaterThanOrEqual(2);
    expect(body.latency.count).toBeGreaterThanOrEqual(1);
    expect(body.workers).toMatchObject({ total: 1, healthy: 1 });
    expect(body.slots.total).toBe(4);
    expect(body.deadLetters).toBeGreaterThanOrEqual(1);
    const live = readSse(`${opsBase}/api/events`);
    await waitFor(() => live.frames.filter((f) => f.event === "overview").length >= 2, { timeoutMs: 10_000, what: "overviews on the stream" });
    await live.close();
    // The figures come from the job records: a console started now shows what finished before it.
    expect(body.figuresFrom).toBe("store");
    const late = createConsole({ queue, events, store, uiDir });
    try {
      const lateBase = await listen((req, res) => late(req, res));
      const { body: fresh } = await new Session(lateBase).get("/api/overview");
      expect(fresh.figuresFrom).toBe("store");
      const sum = (o: typeof fresh, kind: string) => o.throughput.buckets.reduce((n: number, b: Record<string, number>) => n + (b[kind] ?? 0), 0);
      for (const kind of ["completed", "cancelled"]) expect(sum(fresh, kind)).toBeGreaterThanOrEqual(sum(body, kind));
      expect(sum(fresh, "cancelled")).toBeGreaterThanOrEqual(4);
      expect(fresh.throughput.buckets).toHaveLength(90);
      expect(fresh.latency.count).toBeGreaterThanOrEqual(2);
      expect(fresh.latency.p50Ms).toBeLessThanOrEqual(fresh.latency.p95Ms);
      expect(fresh.wait.count).toBeGreaterThanOrEqual(2);
      expect(fresh.wait.p50Ms).toBeLessThanOrEqual(fresh.wait.p95Ms);
    } finally {
      await late.close();
    }
  });

  it("saves, lists and deletes filters, kept in the store's schema", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const saved = await session.post("/api/filters", { name: "failed builds", filter: { state: ["failed"], type: "build" } });
    expect(saved.status).toBe(200);
    expect((await session.get("/api/filters")).body.filters).toContainEqual(expect.objectContaining({ name: "failed builds", filter: { state: ["failed"], type: "build" }, createdBy: "ops" }));
    const rows = await postgres.query<{ name: string }>(`SELECT name FROM ${SCHEMA}.console_filters`);
    expect(rows.map((r) => r.name)).toContain("failed builds");
    expect((await session.send("DELETE", `/api/filters/${encodeURIComponent("failed builds")}`)).status).toBe(200);
    expect((await session.send("DELETE", `/api/filters/${encodeURIComponent("failed builds")}`)).status).toBe(404);
    const audited = await postgres.query<{ outcome: string }>(`SELECT entry->>'outcome' AS outcome FROM ${SCHEMA}.console_audit WHERE entry->>'action' = 'filters' ORDER BY at, id`);
    expect(audited.map((r) => r.outcome)).toEqual(["ok", "ok", "failed"]);
  });

  it("lists the dead letters that are not jobs, shows one whole, and discards it (authorized and audited)", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const before = await rabbit.messageCount(`${queueName}.dead`);
    const text = `{"v":1,"id":"forged-${randomUUID()}", <script>alert(1)</script> ${"x".repeat(3000)}`;
    const binary = new Uint8Array([0xff, 0xfe, 0x00, 0x81, 0x42]);
    // A job envelope with one bad field (`attempt` a string): invalid, but its payload is a job's.
    const damaged = JSON.stringify({ v: 1, id: `damaged-${randomUUID()}`, type: "build", attempt: "1", payload: { secret: "hunter2", keep: 1 } });
    const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");
    await rabbit.publishRaw(queueName, new TextEncoder().encode(text));
    await rabbit.publishRaw(queueName, binary);
    await rabbit.publishRaw(queueName, new TextEncoder().encode(damaged));
    // The orchestrator's consumer moves all three aside as invalid envelopes.
    const listed = await waitFor(async () => {
      const { body } = await session.get("/api/dead-letters/invalid");
      return body.invalid.length >= 3 && body;
    }, { timeoutMs: 20_000, what: "the three invalid dead letters listed" });
    expect(listed).toMatchObject({ supported: true, discardable: true, more: false });
    expect(listed.scanned).toBeGreaterThanOrEqual(3);
    const shown = listed.invalid.find((l: { body: { data: string } }) => l.body.data.includes("forged-"));
    expect(shown.reason).toMatch(/invalid|envelope|JSON/i);
    expect(shown.body).toMatchObject({ encoding: "utf8", bytes: Buffer.byteLength(text), cut: true, data: text.slice(0, 2048), sha256: sha256(text), shown: "raw" });
    const raw = listed.invalid.find((l: { body: { encoding: string } }) => l.body.encoding === "base64");
    expect(raw.body).toEqual({ encoding: "base64", data: Buffer.from(binary).toString("base64"), bytes: 5, cut: false, sha256: sha256(binary), shown: "raw" });
    // The damaged envelope's payload goes through the console's `redact` hook, as every job's does.
    const envelope = listed.invalid.find((l: { body: { data: string } }) => l.body.data.includes("damaged-"));
    expect(envelope.body).toMatchObject({ shown: "redacted", bytes: Buffer.byteLength(damaged), sha256: sha256(damaged) });
    expect(JSON.parse(envelope.body.data)).toEqual({ ...JSON.parse(damaged), payload: { secret: "[redacted]", keep: 1 } });
    expect(envelope.body.data).not.toContain("hunter2");
    const opened = await session.get(`/api/dead-letters/invalid/${encodeURIComponent(envelope.id)}`);
    expect(opened.body.deadLetter.body).toMatchObject({ shown: "redacted", cut: false });
    expect(opened.body.deadLetter.body.data).not.toContain("hunter2");
    // Who may not discard sees no bytes that are not an envelope: size and digest only.
    const reader = new Session(readOnlyBase);
    await reader.open();
    const read = (await reader.get("/api/dead-letters/invalid")).body.invalid;
    expect(read.find((l: { id: string }) => l.id === shown.id).body).toEqual({ encoding: "utf8", data: "", bytes: Buffer.byteLength(text), cut: false, sha256: sha256(text), shown: "hidden" });
    expect(read.find((l: { id: string }) => l.id === raw.id).body).toMatchObject({ data: "", shown: "hidden" });
    expect((await reader.get(`/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`)).body.deadLetter.body).toMatchObject({ data: "", shown: "hidden" });
    expect(read.find((l: { id: string }) => l.id === envelope.id).body).toMatchObject({ shown: "redacted" });
    // The job store knows neither: they have no job.
    expect((await session.get("/api/dead-letters?limit=500")).body.deadLetters.map((d: { jobId: string }) => d.jobId)).not.toContain(shown.id);

    const whole = await session.get(`/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`);
    expect(whole.body.deadLetter).toMatchObject({ id: shown.id, body: { encoding: "utf8", data: text, cut: false, shown: "raw" } });
    expect((await session.get("/api/dead-letters/invalid/no-such-id")).status).toBe(404);

    const viewer = new Session(readOnlyBase);
    await viewer.open();
    expect((await viewer.send("DELETE", `/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`)).status).toBe(403);
    expect((await session.send("DELETE", `/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`, undefined, { csrf: null })).status).toBe(403);
    const discarded = await session.send("DELETE", `/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`);
    expect(discarded).toEqual({ status: 200, body: { discarded: shown.id } });
    expect((await session.send("DELETE", `/api/dead-letters/invalid/${encodeURIComponent(shown.id)}`)).status).toBe(404);
    const after = (await session.get("/api/dead-letters/invalid")).body.invalid.map((l: { id: string }) => l.id);
    expect(after).not.toContain(shown.id);
    expect(after).toContain(raw.id);
    expect(await rabbit.messageCount(`${queueName}.dead`)).toBe(before + 2);
    const audit = (await session.get("/api/audit?limit=20")).body.entries;
    expect(audit).toContainEqual(expect.objectContaining({ who: "ops", action: "discard", target: shown.id, outcome: "ok" }));
    expect(audit).toContainEqual(expect.objectContaining({ who: "anonymous", action: "discard", target: shown.id, outcome: "denied" }));
  });

  it("answers bad input with 400 and { error: { code, message } }, never a crash", async () => {
    const session = new Session(opsBase, "ops");
    await session.open();
    const bad = async (request: Promise<{ status: number; body: any }>, status = 400) => {
      const { status: got, body } = await request;
      expect(got).toBe(status);
      expect(body.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
    };
    await bad(session.get("/api/jobs?limit=abc"));
    await bad(session.get("/api/jobs?state=sleeping"));
    await bad(session.get("/api/jobs?since=yesterday-ish"));
    await bad(session.get("/api/jobs?cursor=nonsense"));
    await bad(session.get(`/api/jobs/${"x".repeat(300)}`));
    await bad(session.get("/api/jobs/%E0%A4%A"));
    await bad(session.get("/api/jobs/does-not-exist"), 404);
    await bad(session.post("/api/jobs", undefined, { raw: "{not json" }));
    await bad(session.post("/api/jobs", { type: "echo" }));
    await bad(session.post("/api/jobs", { type: "echo", payload: 1, colour: "red" }));
    for (const wrong of [{ priority: 0 }, { priority: 2.5 }, { delayMs: -1 }, { runAt: "tomorrow" }, { runAt: Date.now() + 1000, delayMs: 1000 }, { labels: { gpu: 1 } }]) {
      const { status, body } = await session.post("/api/jobs", { type: "echo", payload: 1, ...wrong });
      expect(status, JSON.stringify(wrong)).toBe(400);
      // `field` names the input, so the page can mark it.
      expect(body.error).toMatchObject({ code: "invalid_argument", field: expect.stringMatching(new RegExp(`^${Object.keys(wrong)[0]}`)) });
    }
    await bad(session.post("/api/bulk", { action: "delete", filter: {}, expectedCount: 0 }));
    await bad(session.post("/api/bulk/preview", { action: "cancel", filter: { state: ["nope"] } }));
    await bad(session.post("/api/filters", { name: "", filter: {} }));
    await bad(session.send("PUT", "/api/jobs"), 405);
    expect((await session.get("/api/overview")).status).toBe(200); // still serving
  });
});
