import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** A scheduler process (see `scheduler-entry.ts`), its output lines kept in order. */
export interface SchedulerProcess {
  readonly pid: number;
  /** Every line it printed on stdout so far (`ready`, `leading`, `following`, `fired <jobId>`). */
  lines(): string[];
  /** stdout and stderr so far. */
  output(): string;
  kill(signal: NodeJS.Signals): void;
  readonly exited: Promise<void>;
  /** SIGTERM (graceful), SIGKILL after 5 s; idempotent. */
  stop(): Promise<void>;
}

const entry = fileURLToPath(new URL("./scheduler-entry.ts", import.meta.url));
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Forks a scheduler process and resolves once it has joined the election (`ready`). */
export async function startSchedulerProcess(config: { amqpUrl: string; postgresUrl: string; schema: string; queueName: string }): Promise<SchedulerProcess> {
  const child = spawn(process.execPath, ["--no-warnings", entry, JSON.stringify(config)], { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  let output = "";
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once("exit", () => {
    live.delete(child);
    resolve();
  }));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`scheduler process not ready within 15 s:\n${output}`)), 15_000);
    let partial = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      partial += chunk.toString();
      const complete = partial.split("\n");
      partial = complete.pop() ?? "";
      for (const line of complete) {
        lines.push(line);
        if (line === "ready") {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`scheduler process exited before ready:\n${output}`));
    });
  });
  return {
    pid: child.pid as number,
    lines: () => [...lines],
    output: () => output,
    kill: (signal) => child.kill(signal),
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
