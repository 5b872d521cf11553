import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { announceWorker } from "../discovery/broker-announcer.ts";
import type { WorkerAnnouncer } from "../discovery/broker-announcer.ts";
import { OrchestratorError } from "../errors.ts";
import { createImageBuildHandler } from "../worker/handlers/image-build.ts";
import { createShellHandler } from "../worker/handlers/shell.ts";
import { serveWorker, WORKER_SDK_VERSION } from "../worker/serve-worker.ts";
import type { JobHandler, JobHandlers } from "../worker/types.ts";
import { helpText, parseWorkerArgs, UsageError } from "./worker-args.ts";
import type { WorkerCommandOptions } from "./worker-args.ts";

/**
 * `blacktree-worker`: serves handlers (built-ins and/or a module's) with `serveWorker()`,
 * optionally announces itself through RabbitMQ, and shuts down gracefully on SIGTERM / SIGINT.
 * @internal
 */

/** Where the command writes, and how it ends; a test passes its own. */
export interface CommandIo {
  out: (line: string) => void;
  err: (line: string) => void;
  exit: (code: number) => void;
}

type Log = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => void;

function logger(format: "text" | "json", write: (line: string) => void): Log {
  return (level, msg, fields = {}) => {
    const time = new Date().toISOString();
    if (format === "json") return write(JSON.stringify({ time, level, msg, ...fields }));
    const rest = Object.entries(fields).map(([key, value]) => `${key}=${typeof value === "string" && !/\s/.test(value) ? value : JSON.stringify(value)}`);
    write([time, level, msg, ...rest].join(" "));
  };
}

/** The built-in handlers by name, with the job type they serve. */
function builtIn(name: string, options: WorkerCommandOptions): JobHandlers | undefined {
  if (name === "shell") return { shell: createShellHandler() as JobHandler<never, unknown> };
  if (name === "image-build") return { "image-build": createImageBuildHandler({ engine: options.imageEngine }) as JobHandler<never, unknown> };
  return undefined;
}

/** Loads a handlers module: its `handlers` export, else its default export, else its exported functions by name. */
async function loadModule(path: string): Promise<JobHandlers> {
  const url = pathToFileURL(isAbsolute(path) ? path : resolve(process.cwd(), path)).href;
  let module: Record<string, unknown>;
  try {
    module = (await import(url)) as Record<string, unknown>;
  } catch (error) {
    throw new UsageError(`--handlers: cannot load ${path}: ${(error as Error).message.split("\n")[0]}`);
  }
  const candidate = [module.handlers, module.default].find((value) => typeof value === "object" && value !== null) as Record<string, unknown> | undefined;
  const source = candidate ?? module;
  const handlers: JobHandlers = {};
  for (const [type, handler] of Object.entries(source)) if (typeof handler === "function") handlers[type] = handler as JobHandler<never, unknown>;
  if (Object.keys(handlers).length === 0) throw new UsageError(`--handlers: ${path} exports no handlers (export \`handlers\`, a default object, or functions named after job types)`);
  return handlers;
}

/** Runs the command; resolves once the worker is serving (and announced). Signals end it through `io.exit`. */
export async function runWorkerCommand(argv: readonly string[], env: NodeJS.ProcessEnv, io: CommandIo): Promise<void> {
  let options: ReturnType<typeof parseWorkerArgs>;
  try {
    options = parseWorkerArgs(argv, env);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`blacktree-worker: ${error.message} (see --help)`);
      return io.exit(2);
    }
    throw error;
  }
  if (options === "help") {
    io.out(helpText());
    return io.exit(0);
  }
  if (options === "version") {
    io.out(WORKER_SDK_VERSION);
    return io.exit(0);
  }
  const log = logger(options.logFormat, io.err);
  try {
    await serve(options, log, io);
  } catch (error) {
    const message = error instanceof UsageError ? error.message : error instanceof OrchestratorError ? error.message : String((error as Error)?.stack ?? error);
    log("error", `cannot start: ${message}`);
    io.exit(error instanceof UsageError ? 2 : 1);
  }
}

async function serve(options: WorkerCommandOptions, log: Log, io: CommandIo): Promise<void> {
  const handlers: JobHandlers = {};
  for (const entry of options.handlers) Object.assign(handlers, builtIn(entry, options) ?? (await loadModule(entry)));
  const tls =
    options.tlsCert !== undefined && options.tlsKey !== undefined
      ? {
          cert: await readFile(options.tlsCert),
          key: await readFile(options.tlsKey),
          ...(options.tlsCa === undefined ? {} : { ca: await readFile(options.tlsCa) }),
        }
      : undefined;
  const worker = await serveWorker({
    handlers,
    port: options.port,
    host: options.host,
    slots: options.slots,
    labels: options.labels,
    gracePeriodMs: options.gracePeriodMs,
    handleSignals: false,
    ...(options.id === undefined ? {} : { id: options.id }),
    ...(tls === undefined ? {} : { tls }),
    ...(options.token === undefined ? {} : { auth: { token: options.token } }),
  });
  const { description } = worker;
  log("info", "worker listening", { id: worker.id, pid: process.pid, port: worker.port, slots: description.slots, jobTypes: description.jobTypes, labels: description.labels, tls: tls !== undefined });

  let announcer: WorkerAnnouncer | undefined;
  if (options.announce !== undefined) {
    const advertised = options.advertise ?? hostname();
    const address = /:\d+$/.test(advertised) && !/^[^[]*:.*:/.test(advertised) ? advertised : `${advertised}:${worker.port}`;
    try {
      announcer = await announceWorker({
        url: options.announce,
        address,
        description,
        intervalMs: options.announceIntervalMs,
        ...(options.announceExchange === undefined ? {} : { exchange: options.announceExchange }),
      });
    } catch (error) {
      await worker.close({ signal: AbortSignal.abort() });
      throw error;
    }
    log("info", "worker announced", { address, intervalMs: options.announceIntervalMs });
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log("warn", `second ${signal}: exiting now`);
      return io.exit(130);
    }
    stopping = true;
    log("info", `${signal}: shutting down`, { running: worker.running, gracePeriodMs: options.gracePeriodMs });
    void (async () => {
      // Goodbye first: orchestrators stop sending jobs and let the running ones finish.
      await announcer?.close().catch((error: unknown) => log("warn", "goodbye not published", { error: String(error) }));
      await worker.close();
      log("info", "worker stopped");
      io.exit(0);
    })();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
