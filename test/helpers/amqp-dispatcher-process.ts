import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Options of {@link startDispatcherProcess}. */
export interface DispatcherProcessOptions {
  url: string;
  queueName: string;
  /** `host:port` of each worker. */
  workers: readonly string[];
  /** Slots of each worker. @default 1 */
  slots?: number;
  /** How long the process may take to print `ready`. @default 15000 */
  startTimeoutMs?: number;
}

/** An orchestrator process (Dispatcher on AmqpQueue/AmqpEvents with gRPC workers). */
export interface DispatcherProcess {
  readonly pid: number;
  /** `[jobId, attempt]` of every attempt it started, in order. */
  started(): Array<[string, number]>;
  output(): string;
  kill(signal: NodeJS.Signals): void;
  readonly exited: Promise<void>;
  /** How it exited (both null while it runs): `code` 0 after a graceful SIGTERM, `signal` "SIGKILL" when `stop()` had to force it. */
  exitStatus(): { code: number | null; signal: NodeJS.Signals | null };
  /** SIGTERM (graceful close), SIGKILL after 5 s; idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const entry = fileURLToPath(new URL("./amqp-dispatcher-entry.ts", import.meta.url));
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Forks an orchestrator process and resolves once it prints `ready` (it consumes by then). */
export async function startDispatcherProcess(options: DispatcherProcessOptions): Promise<DispatcherProcess> {
  const config = { url: options.url, queueName: options.queueName, workers: options.workers, slots: options.slots ?? 1 };
  const child = spawn(process.execPath, ["--no-warnings", entry, JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  const started: Array<[string, number]> = [];
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      live.delete(child);
      resolve();
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dispatcher process not ready within ${options.startTimeoutMs ?? 15_000} ms:\n${output}`)), options.startTimeoutMs ?? 15_000);
    let partial = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      partial += chunk.toString();
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        const [word, id, attempt] = line.split(" ");
        if (word === "ready") {
          clearTimeout(timer);
          resolve();
        } else if (word === "started" && id) {
          started.push([id, Number(attempt)]);
        }
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`dispatcher process exited before ready:\n${output}`));
    });
  });
  await ready;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  return {
    pid: child.pid as number,
    started: () => [...started],
    output: () => output,
    kill: (signal) => child.kill(signal),
    exited,
    exitStatus: () => ({ code: child.exitCode, signal: child.signalCode }),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
