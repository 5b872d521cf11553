import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { JobClient } from "../client/job-client.ts";
import { OrchestratorError } from "../errors.ts";
import type { JobEvent } from "../job/types.ts";
import type { Subscription } from "../queue/types.ts";
import type { JobStore } from "../store/types.ts";
import { type Logger, logSafely, resolveLogger } from "../telemetry/logger.ts";
import { checkFunction, checkInteger, checkObject, checkString, optional } from "../validate.ts";
import { AuditLog, consoleRecordsOf } from "./audit-log.ts";
import { CsrfGuard } from "./csrf.ts";
import { HttpError, readJson, secure, sendError, sendJson } from "./http.ts";
import { LiveStats, SseHub } from "./live.ts";
import { ActionRoutes } from "./routes-actions.ts";
import { ReadRoutes } from "./routes-read.ts";
import { PageFiles } from "./static-files.ts";
import { CONSOLE_ACTIONS, type ConsoleJobEvent, type ConsoleOverview, type ConsoleSession } from "./api-types.ts";
import type { ConsoleAction, ConsoleOptions } from "./types.ts";
import { WorkerDirectory } from "./worker-directory.ts";

/** A console: the request handler, plus its lifecycle. */
export interface ConsoleHandler {
  /**
   * Serves one request under the console's path: the page, `api/…` and the `api/events`
   * stream. A request outside `basePath` goes to `next()` (or gets a 404 without one).
   */
  (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void): void;
  /** Opens the event subscriptions (the first request does it too). Idempotent. */
  ready(): Promise<void>;
  /** Ends the live streams and the subscriptions; leaves the queue, events and store open. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** One request as the routes see it. @internal */
export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** The path below the console's mount point, starting with `/`. */
  path: string;
  query: URLSearchParams;
  /** The `:param` of the route, decoded. */
  param: string;
  /** Who is asking (the `identify` hook), resolved on demand. */
  who(): Promise<string>;
  /** Reads the JSON body (an object). */
  body(): Promise<Record<string, unknown>>;
}

/** What the route modules share of the console. @internal */
export interface ConsoleCore {
  readonly store: JobStore;
  readonly client: JobClient;
  readonly options: ConsoleOptions;
  readonly stats: LiveStats;
  readonly hub: SseHub;
  readonly audit: AuditLog;
  readonly directory: WorkerDirectory | undefined;
  readonly redact: (payload: unknown, record: import("../store/types.ts").JobRecord | undefined) => unknown;
  /** The overview, at most one read a second. */
  overview(): Promise<ConsoleOverview>;
  /** Refuses (403, audited) unless `authorize` allows the action. */
  authorize(ctx: RouteContext, action: ConsoleAction): Promise<void>;
  /** Reports an error that does not fail the request (logger, else the console's error channel). */
  report(error: unknown): void;
  /** Whether `authorize` allows a kind of action (for the session). */
  allows(req: IncomingMessage, kind: ConsoleAction["kind"]): Promise<boolean>;
}

type Route = { method: string; pattern: RegExp; run: (ctx: RouteContext) => Promise<void> };

/**
 * Creates an operator console: an embeddable `node:http` handler serving one web page, a JSON
 * API and a live event stream (SSE) over the job store, the queue, the job events and (with a
 * `poolBus`) every orchestrator's workers. It runs in any process that reaches them.
 *
 * Safe by default: without an `authorize` hook the console is read-only (every mutating request
 * is refused 403); every mutating request needs the session's CSRF token; every response carries
 * a strict Content-Security-Policy; payloads pass through `redact`; every action is audited.
 *
 * @example
 * ```ts
 * const console = createConsole({
 *   queue, events, store, poolBus: new AmqpPoolBus({ connection, queueName: "builds" }),
 *   basePath: "/admin/jobs",
 *   identify: (req) => sessionOf(req)?.user,
 *   authorize: (req, action) => sessionOf(req)?.roles.includes("ops") ?? false,
 * });
 * http.createServer((req, res) => console(req, res, () => app(req, res))).listen(8080);
 * ```
 * @throws {OrchestratorError} `invalid_argument` naming the first bad option.
 */
export function createConsole(options: ConsoleOptions): ConsoleHandler {
  const console = new Console(options);
  const handler = ((req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => console.handle(req, res, next)) as ConsoleHandler;
  handler.ready = () => console.ready();
  handler.close = () => console.close();
  handler[Symbol.asyncDispose] = () => console.close();
  return handler;
}

class Console implements ConsoleCore {
  readonly store: JobStore;
  readonly client: JobClient;
  readonly options: ConsoleOptions;
  readonly stats = new LiveStats();
  readonly hub = new SseHub();
  readonly audit: AuditLog;
  readonly directory: WorkerDirectory | undefined;
  readonly redact: ConsoleCore["redact"];
  readonly #basePath: string;
  readonly #csrf: CsrfGuard;
  readonly #pages: PageFiles;
  readonly #maxBodyBytes: number;
  readonly #overviewIntervalMs: number;
  readonly #logger: Logger | undefined;
  readonly #routes: Route[];
  #overview: { at: number; value: Promise<ConsoleOverview> } | undefined;
  #subscription: Subscription | undefined;
  #overviewTimer: ReturnType<typeof setInterval> | undefined;
  #ready: Promise<void> | undefined;
  #closed: Promise<void> | undefined;
  readonly #read: ReadRoutes;

  constructor(options: ConsoleOptions) {
    const o = checkObject("options", options);
    const queue = checkObject("queue", o.queue);
    checkFunction("queue.enqueue", queue.enqueue);
    const events = checkObject("events", o.events);
    for (const method of ["subscribe", "cancel"]) checkFunction(`events.${method}`, events[method]);
    const store = checkObject("store", o.store);
    for (const method of ["get", "list", "counts"]) checkFunction(`store.${method}`, store[method]);
    if (o.authorize !== undefined) checkFunction("authorize", o.authorize);
    if (o.identify !== undefined) checkFunction("identify", o.identify);
    const redact = optional(o.redact, undefined, (v) => checkFunction<NonNullable<ConsoleOptions["redact"]>>("redact", v));
    this.#basePath = optional(o.basePath, "", (v) => {
      const path = checkString("basePath", v, 1024).replace(/\/+$/, "");
      if (path !== "" && !path.startsWith("/")) throw new OrchestratorError("invalid_argument", `Expected \`basePath\` to start with "/", got \`${path}\``, { details: { field: "basePath" } });
      return path;
    });
    const secret = optional<Buffer>(o.secret, randomBytes(32), (v) => {
      if (typeof v === "string" && v.length >= 16) return Buffer.from(v);
      if (v instanceof Uint8Array && v.byteLength >= 16) return Buffer.from(v);
      throw new OrchestratorError("invalid_argument", "Expected `secret` to be a string or bytes of at least 16", { details: { field: "secret" } });
    });
    const trustProxy = optional(o.trustProxy, false, (v) => {
      if (typeof v !== "boolean") throw new OrchestratorError("invalid_argument", "Expected `trustProxy` to be a boolean", { details: { field: "trustProxy" } });
      return v;
    });
    this.#maxBodyBytes = optional(o.maxBodyBytes, 1 << 20, (v) => checkInteger("maxBodyBytes", v, 1024, 64 << 20));
    this.#overviewIntervalMs = optional(o.overviewIntervalMs, 5000, (v) => checkInteger("overviewIntervalMs", v, 100, 3_600_000));
    const uiDir = optional(o.uiDir, undefined, (v) => checkString("uiDir", v, 4096));
    this.#logger = resolveLogger(o.logger);
    if (o.poolBus !== undefined) {
      const bus = checkObject("poolBus", o.poolBus);
      for (const method of ["publish", "subscribe"]) checkFunction(`poolBus.${method}`, bus[method]);
    }

    this.options = options;
    this.store = options.store;
    this.client = new JobClient({ queue: options.queue, events: options.events, store: options.store });
    this.client.on("error", ({ error }) => this.report(error));
    this.redact = (payload, record) => (redact === undefined ? payload : redact(payload, record));
    this.#csrf = new CsrfGuard(secret, this.#basePath === "" ? "/" : this.#basePath, trustProxy);
    this.#pages = new PageFiles(uiDir);
    const { records } = consoleRecordsOf(options.store);
    this.audit = new AuditLog(records, (entry) => this.hub.send("audit", entry), (error) => this.report(error));
    this.directory = options.poolBus === undefined ? undefined : new WorkerDirectory(options.poolBus);
    this.directory?.on("changed", (worker) => this.hub.send("worker", worker));
    this.#read = new ReadRoutes(this);
    const actions = new ActionRoutes(this);
    const route = (method: string, pattern: RegExp, run: (ctx: RouteContext) => Promise<void>): Route => ({ method, pattern, run });
    this.#routes = [
      route("GET", /^\/api\/session$/, (ctx) => this.#session(ctx)),
      route("GET", /^\/api\/overview$/, async (ctx) => sendJson(ctx.res, 200, await this.overview())),
      route("GET", /^\/api\/jobs$/, (ctx) => this.#read.jobs(ctx)),
      route("GET", /^\/api\/jobs\/([^/]+)$/, (ctx) => this.#read.job(ctx)),
      route("GET", /^\/api\/workers$/, (ctx) => this.#read.workers(ctx)),
      route("GET", /^\/api\/workers\/([^/]+)$/, (ctx) => this.#read.worker(ctx)),
      route("GET", /^\/api\/dead-letters$/, (ctx) => this.#read.deadLetters(ctx)),
      route("GET", /^\/api\/dead-letters\/invalid$/, (ctx) => this.#read.invalidDeadLetters(ctx)),
      route("GET", /^\/api\/dead-letters\/invalid\/([^/]+)$/, (ctx) => this.#read.invalidDeadLetter(ctx)),
      route("GET", /^\/api\/audit$/, (ctx) => this.#read.audit(ctx)),
      route("GET", /^\/api\/filters$/, (ctx) => this.#read.filters(ctx)),
      route("GET", /^\/api\/events$/, (ctx) => this.#events(ctx)),
      route("POST", /^\/api\/jobs$/, (ctx) => actions.submit(ctx)),
      route("POST", /^\/api\/jobs\/([^/]+)\/cancel$/, (ctx) => actions.cancel(ctx)),
      route("POST", /^\/api\/jobs\/([^/]+)\/retry$/, (ctx) => actions.retry(ctx)),
      route("POST", /^\/api\/dead-letters\/redrive$/, (ctx) => actions.redrive(ctx)),
      route("POST", /^\/api\/workers\/([^/]+)\/drain$/, (ctx) => actions.drain(ctx, "drain")),
      route("POST", /^\/api\/workers\/([^/]+)\/undrain$/, (ctx) => actions.drain(ctx, "undrain")),
      route("POST", /^\/api\/bulk\/preview$/, (ctx) => actions.bulkPreview(ctx)),
      route("POST", /^\/api\/bulk$/, (ctx) => actions.bulk(ctx)),
      route("POST", /^\/api\/filters$/, (ctx) => actions.saveFilter(ctx)),
      route("DELETE", /^\/api\/filters\/([^/]+)$/, (ctx) => actions.deleteFilter(ctx)),
      route("DELETE", /^\/api\/dead-letters\/invalid\/([^/]+)$/, (ctx) => actions.discard(ctx)),
    ];
  }

  ready(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(new OrchestratorError("queue_closed", "the console is closed"));
    this.#ready ??= this.#start().catch((error: unknown) => {
      this.#ready = undefined; // the next request tries again
      throw error;
    });
    return this.#ready;
  }

  async #start(): Promise<void> {
    this.#subscription = await this.options.events.subscribe("*", (event) => this.#onEvent(event));
    await this.directory?.start();
    this.#overviewTimer = setInterval(() => {
      if (this.hub.size === 0) return;
      this.overview().then(
        (overview) => this.hub.send("overview", overview),
        (error: unknown) => this.report(error),
      );
    }, this.#overviewIntervalMs);
    this.#overviewTimer.unref();
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      clearInterval(this.#overviewTimer);
      this.hub.close();
      await this.#ready?.catch(() => undefined);
      await this.#subscription?.close();
      await this.directory?.close();
      await this.client.close();
    })();
    return this.#closed;
  }

  #onEvent(event: JobEvent): void {
    this.stats.observe(event);
    // A result's value is the job's output: the job page reads it through `redact`, not the stream.
    const shown: ConsoleJobEvent = event.kind === "result" && event.outcome.status === "completed" ? { ...event, outcome: { status: "completed" } } : event;
    this.hub.send("job", shown, event.jobId);
  }

  overview(): Promise<ConsoleOverview> {
    const now = Date.now();
    if (this.#overview === undefined || now - this.#overview.at >= 1000) {
      const value = this.#read.overview();
      value.catch(() => {
        if (this.#overview?.value === value) this.#overview = undefined;
      });
      this.#overview = { at: now, value };
    }
    return this.#overview.value;
  }

  async allows(req: IncomingMessage, kind: ConsoleAction["kind"]): Promise<boolean> {
    const authorize = this.options.authorize;
    if (authorize === undefined) return false;
    try {
      return (await authorize(req, { kind })) === true;
    } catch (error) {
      this.report(error);
      return false;
    }
  }

  async authorize(ctx: RouteContext, action: ConsoleAction): Promise<void> {
    const authorize = this.options.authorize;
    let allowed = false;
    if (authorize !== undefined) {
      try {
        allowed = (await authorize(ctx.req, action)) === true;
      } catch (error) {
        this.report(error);
      }
    }
    if (allowed) return;
    await this.audit.write({
      who: await ctx.who(),
      action: action.kind,
      ...(action.target === undefined ? {} : { target: action.target }),
      ...(action.bulk === undefined ? {} : { filter: action.bulk.filter as Record<string, unknown>, count: action.bulk.count }),
      outcome: "denied",
      detail: authorize === undefined ? "the console is read-only (no authorize hook)" : "refused by the authorize hook",
    });
    throw new HttpError(403, "forbidden", authorize === undefined ? "The console is read-only" : `Not allowed to ${action.kind}`);
  }

  async #session(ctx: RouteContext): Promise<void> {
    const csrfToken = this.#csrf.issue(ctx.req, ctx.res);
    const actions: Record<string, boolean> = {};
    for (const kind of CONSOLE_ACTIONS) actions[kind] = await this.allows(ctx.req, kind);
    sendJson(ctx.res, 200, {
      readOnly: !Object.values(actions).some(Boolean),
      user: await ctx.who(),
      csrfToken,
      actions: actions as ConsoleSession["actions"],
      persisted: consoleRecordsOf(this.store).persisted,
    } satisfies ConsoleSession);
  }

  async #events(ctx: RouteContext): Promise<void> {
    const job = ctx.query.get("job");
    const jobId = job === null || job === "" ? undefined : checkString("job", job, 256);
    const first: Array<{ event: string; data: unknown }> = [];
    if (jobId === undefined) {
      first.push({ event: "overview", data: await this.overview() });
    }
    this.hub.add(ctx.res, jobId, first);
  }

  handle(req: IncomingMessage, res: ServerResponse, next: ((error?: unknown) => void) | undefined): void {
    this.#handle(req, res, next).catch((error: unknown) => {
      this.report(error);
      if (!res.headersSent) sendError(res, error);
      else res.destroy();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse, next: ((error?: unknown) => void) | undefined): Promise<void> {
    const located = this.#locate(req);
    if (located === undefined) {
      if (next !== undefined) return next();
      secure(res);
      return sendJson(res, 404, { error: { code: "not_found", message: "Not under the console's path" } });
    }
    secure(res);
    if (located.redirect !== undefined) {
      res.statusCode = 308;
      res.setHeader("location", located.redirect);
      res.end();
      return;
    }
    const { path, query } = located;
    const method = (req.method ?? "GET").toUpperCase();
    if (!path.startsWith("/api/")) {
      if (method !== "GET" && method !== "HEAD") throw new HttpError(405, "method_not_allowed", `${method} is not allowed here`);
      const page = await this.#pages.read(path);
      if (page === undefined) throw new HttpError(404, "not_found", "No such page");
      res.statusCode = 200;
      res.setHeader("content-type", page.type);
      res.setHeader("cache-control", "no-cache");
      res.setHeader("content-length", page.body.byteLength);
      res.end(method === "HEAD" ? undefined : page.body);
      return;
    }
    if (this.#closed !== undefined) throw new OrchestratorError("queue_closed", "the console is closed");
    const candidates = this.#routes.filter((r) => r.pattern.test(path));
    if (candidates.length === 0) throw new HttpError(404, "not_found", `No route ${path}`);
    const found = candidates.find((r) => r.method === method);
    if (found === undefined) {
      res.setHeader("allow", candidates.map((r) => r.method).join(", "));
      throw new HttpError(405, "method_not_allowed", `${method} is not allowed on ${path}`);
    }
    if (method !== "GET") this.#csrf.check(req);
    // The live stream needs the event subscription; the rest works from the store without it.
    if (path === "/api/events") await this.ready();
    else this.ready().catch((error: unknown) => this.report(error));
    const match = found.pattern.exec(path) as RegExpExecArray;
    let param = "";
    if (match[1] !== undefined) {
      try {
        param = decodeURIComponent(match[1]);
      } catch {
        throw new HttpError(400, "invalid_argument", "The path is not validly encoded");
      }
    }
    let who: Promise<string> | undefined;
    const ctx: RouteContext = {
      req, res, path, query, param,
      who: () => (who ??= this.#identify(req)),
      body: async () => {
        const parsed = (req as { body?: unknown }).body !== undefined && req.readableEnded ? (req as { body?: unknown }).body : await readJson(req, this.#maxBodyBytes);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new HttpError(400, "invalid_argument", "Expected a JSON object as the body");
        return parsed as Record<string, unknown>;
      },
    };
    await found.run(ctx);
  }

  /** The request's path below the mount point, a redirect to add the trailing slash, or undefined when outside. */
  #locate(req: IncomingMessage): { path: string; query: URLSearchParams; redirect?: string } | undefined {
    const raw = req.url ?? "/";
    const q = raw.indexOf("?");
    let path = q === -1 ? raw : raw.slice(0, q);
    const search = q === -1 ? "" : raw.slice(q);
    const express = req as { baseUrl?: unknown; originalUrl?: unknown };
    const mounted = typeof express.baseUrl === "string" && express.baseUrl !== "";
    if (!mounted && this.#basePath !== "") {
      if (path !== this.#basePath && !path.startsWith(`${this.#basePath}/`)) return undefined;
      path = path.slice(this.#basePath.length);
    }
    const original = typeof express.originalUrl === "string" ? express.originalUrl : raw;
    const originalPath = original.split("?")[0] ?? "";
    if (path === "" || (path === "/" && !originalPath.endsWith("/"))) {
      return { path: "/", query: new URLSearchParams(), redirect: `${originalPath}/${search}` };
    }
    return { path, query: new URLSearchParams(search) };
  }

  async #identify(req: IncomingMessage): Promise<string> {
    const identify = this.options.identify;
    if (identify === undefined) return "anonymous";
    try {
      const who = await identify(req);
      return typeof who === "string" && who !== "" ? who.slice(0, 256) : "anonymous";
    } catch (error) {
      this.report(error);
      return "anonymous";
    }
  }

  report(error: unknown): void {
    const e = OrchestratorError.from(error);
    if (this.#logger !== undefined) logSafely(this.#logger, "warn", { err: e }, `console: ${e.message}`);
  }
}
