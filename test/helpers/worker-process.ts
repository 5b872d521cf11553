import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Options of {@link startWorkerProcess}. */
export interface WorkerProcessOptions {
  /**
   * Absolute path of the module exporting the handlers.
   * @default src/testing/contract-handlers.ts
   */
  handlersModule?: string;
  /** @default "contractHandlers" */
  handlersExport?: string;
  /** @default 1 */
  slots?: number;
  /** @default {} */
  labels?: Record<string, string>;
  /** Port to listen on; 0 picks one. @default 0 */
  port?: number;
  /** @default 30000 */
  gracePeriodMs?: number;
  /** Bearer token the worker requires. */
  token?: string;
  /** How long the process may take to print `ready <port>`. @default 15000 */
  startTimeoutMs?: number;
}

/** A worker process serving handlers with `serveWorker()`, controllable with signals. */
export interface WorkerProcess {
  readonly pid: number;
  readonly port: number;
  /** `127.0.0.1:<port>` for a `GrpcTransport`. */
  readonly address: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** What it wrote to stdout and stderr so far. */
  output(): string;
  /** Sends `signal` (SIGKILL, SIGTERM, SIGSTOP, SIGCONT, …). */
  kill(signal: NodeJS.Signals): void;
  /** Freezes it (SIGSTOP): its sockets stay open, nothing answers. */
  freeze(): void;
  /** Thaws it (SIGCONT). */
  thaw(): void;
  /** Kills it (SIGCONT then SIGKILL) unless it already exited, and waits for the exit. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const entry = fileURLToPath(new URL("./worker-entry.ts", import.meta.url));
const contractHandlersModule = fileURLToPath(new URL("../../src/testing/contract-handlers.ts", import.meta.url));
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/**
 * Forks `node` (this very binary, node 24) running `worker-entry.ts`, and resolves once the
 * worker prints `ready <port>`.
 *
 * @example
 * ```ts
 * await using worker = await startWorkerProcess({ slots: 2 });
 * const transport = new GrpcTransport({ address: worker.address });
 * ```
 */
export async function startWorkerProcess(options: WorkerProcessOptions = {}): Promise<WorkerProcess> {
  const config = {
    handlersModule: options.handlersModule ?? contractHandlersModule,
    handlersExport: options.handlersExport ?? "contractHandlers",
    port: options.port ?? 0,
    slots: options.slots ?? 1,
    labels: options.labels ?? {},
    gracePeriodMs: options.gracePeriodMs ?? 30_000,
    ...(options.token === undefined ? {} : { token: options.token }),
  };
  const child = spawn(process.execPath, ["--no-warnings", entry, JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`worker process did not start within ${options.startTimeoutMs ?? 15_000} ms:\n${output}`));
    }, options.startTimeoutMs ?? 15_000);
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
      const match = /^ready (\d+)$/m.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`worker process exited (${code ?? signal}) before it was ready:\n${output}`));
    });
  });
  const pid = child.pid as number;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
    }
    await exited;
  };
  return {
    pid,
    port,
    address: `127.0.0.1:${port}`,
    exited,
    output: () => output,
    kill: (signal) => void child.kill(signal),
    freeze: () => void child.kill("SIGSTOP"),
    thaw: () => void child.kill("SIGCONT"),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
