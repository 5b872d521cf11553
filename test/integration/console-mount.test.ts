/**
 * The console mounted under a prefix in the frameworks docs/console.md shows, Express 5, Fastify 5
 * and Koa 3 (devDependencies), exactly as the docs write it: the page, the redirect of the bare
 * prefix, the API with its session cookie and CSRF token, a mutating request, the live stream,
 * and requests outside the prefix left to the app. The console runs on `MemoryQueue` and
 * `MemoryJobStore`, the embedded defaults: what is tested here is the mounting.
 *
 * The frameworks are loaded by a computed name: they ship no types we depend on, and the
 * type check of the other sources must not need them.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createConsole, type ConsoleHandler } from "../../src/console/console.ts";
import { CONTENT_SECURITY_POLICY } from "../../src/console/http.ts";
import { MemoryQueue } from "../../src/queue/memory-queue.ts";
import { MemoryJobStore } from "../../src/store/memory-job-store.ts";
import { waitFor } from "../../src/testing/wait-for.ts";
import { readSse } from "../helpers/sse.ts";

type Next = (error?: unknown) => void;
type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void;
interface ExpressApp {
  use(path: string, handler: Middleware): void;
  use(handler: Middleware): void;
  get(path: string, handler: (req: IncomingMessage, res: ServerResponse & { send(body: string): void }) => void): void;
  listen(port: number, host: string, done: () => void): Server;
}
interface KoaContext {
  path: string;
  req: IncomingMessage;
  res: ServerResponse;
  respond?: boolean;
  body?: unknown;
}
interface FastifyRequest {
  url: string;
  raw: IncomingMessage;
}
interface FastifyReply {
  raw: ServerResponse;
  hijack(): void;
}
interface FastifyApp {
  addHook(name: "onRequest", hook: (req: FastifyRequest, reply: FastifyReply, done: () => void) => void): void;
  get(path: string, handler: () => string): void;
  listen(options: { port: number; host: string }): Promise<string>;
  server: Server;
  close(): Promise<void>;
}
interface KoaApp {
  use(middleware: (ctx: KoaContext, next: () => Promise<void>) => unknown): void;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}

const load = async <T>(name: string): Promise<T> => ((await import(name)) as { default: T }).default;
const PREFIX = "/admin/jobs";

/** What every mount must do, as a browser would use it. */
async function exercise(base: string, store: MemoryJobStore): Promise<void> {
  const bare = await fetch(`${base}${PREFIX}`, { redirect: "manual" });
  expect(bare.status).toBe(308);
  expect(bare.headers.get("location")).toBe(`${PREFIX}/`);
  const page = await fetch(`${base}${PREFIX}/`);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
  expect(await page.text()).toContain("console");

  const session = await fetch(`${base}${PREFIX}/api/session`);
  const cookie = (session.headers.getSetCookie()[0] ?? "").split(";")[0] as string;
  const { csrfToken } = (await session.json()) as { csrfToken: string };
  const submit = (headers: Record<string, string>) =>
    fetch(`${base}${PREFIX}/api/jobs`, { method: "POST", headers: { "content-type": "application/json", cookie, ...headers }, body: JSON.stringify({ type: "echo", payload: { mounted: true } }) });
  expect((await submit({})).status).toBe(403); // no CSRF token
  const created = await submit({ "x-csrf-token": csrfToken });
  expect(created.status).toBe(201);
  const { id } = (await created.json()) as { id: string };
  expect((await store.get(id))?.payload).toEqual({ mounted: true });

  const live = readSse(`${base}${PREFIX}/api/events`);
  await waitFor(() => live.frames.some((f) => f.event === "overview"), { timeoutMs: 10_000, what: "the first overview on the stream" });
  await live.close();
  expect(live.frames.find((f) => f.event === "overview")?.data.jobs.byState.queued).toBeGreaterThanOrEqual(1);

  const outside = await fetch(`${base}/elsewhere`);
  expect(await outside.text()).toBe("the app");
}

describe("the console mounted in Express, Fastify and Koa", () => {
  let uiDir: string;
  const servers: Server[] = [];
  const consoles: ConsoleHandler[] = [];
  const queues: MemoryQueue[] = [];
  const closers: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    uiDir = await mkdtemp(join(tmpdir(), "test-console-mount-"));
    await writeFile(join(uiDir, "index.html"), "<!doctype html><title>console</title>");
    await writeFile(join(uiDir, "console.js"), "export {};");
    await writeFile(join(uiDir, "console.css"), "body{}");
  });

  afterAll(async () => {
    for (const close of closers) await close();
    for (const server of servers) server.closeAllConnections();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    for (const c of consoles) await c.close();
    for (const q of queues) await q.close();
    if (uiDir !== undefined) await rm(uiDir, { recursive: true, force: true });
  });

  function open(basePath?: string): { handler: ConsoleHandler; store: MemoryJobStore } {
    const queue = new MemoryQueue();
    const store = new MemoryJobStore();
    const handler = createConsole({ queue, events: queue, store, uiDir, authorize: () => true, ...(basePath === undefined ? {} : { basePath }) });
    queues.push(queue);
    consoles.push(handler);
    return { handler, store };
  }

  function address(server: Server): string {
    servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it("Express 5: app.use(prefix, console) with no basePath (it reads req.baseUrl), a JSON body parser before it", async () => {
    const express = await load<(() => ExpressApp) & { json(): Middleware }>("express");
    const { handler, store } = open();
    const app = express();
    // The docs' "mount it before any body parser (or leave it: a parsed req.body is used as it is)".
    app.use(express.json());
    app.use(PREFIX, handler);
    app.get("/elsewhere", (_req, res) => res.send("the app"));
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    await exercise(address(server), store);
  });

  it("Koa 3: a middleware that hands the raw request over (ctx.respond = false), basePath set", async () => {
    const Koa = await load<new () => KoaApp>("koa");
    const { handler, store } = open(PREFIX);
    const app = new Koa();
    app.use((ctx, next) => {
      if (ctx.path !== PREFIX && !ctx.path.startsWith(`${PREFIX}/`)) return next();
      ctx.respond = false;
      handler(ctx.req, ctx.res);
    });
    app.use((ctx) => {
      ctx.body = "the app";
    });
    const { createServer } = await import("node:http");
    const server = createServer(app.callback());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    await exercise(address(server), store);
  });

  it("Fastify 5: an onRequest hook that hands the raw request over before Fastify reads the body, basePath set", async () => {
    const fastify = await load<() => FastifyApp>("fastify");
    const { handler, store } = open(PREFIX);
    const app = fastify();
    app.addHook("onRequest", (req, reply, done) => {
      const path = req.url.split("?")[0] as string;
      if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) return done();
      reply.hijack();
      handler(req.raw, reply.raw);
    });
    app.get("/elsewhere", () => "the app");
    await app.listen({ port: 0, host: "127.0.0.1" });
    closers.push(() => app.close());
    await exercise(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, store);
  });
});
